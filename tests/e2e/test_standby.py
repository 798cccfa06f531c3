"""A real daemon in this process as a standby, then as the leader that takes over (SQLite: the
"other host" holding the lease is a second store on the same database). While another
host holds the lease it claims and validates, sends nothing to X, answers /healthz 200 as a
standby; once the lease is released it leads within a renew interval and delivers. A clean
stop releases its own lease."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import aiohttp
from daemon_helpers import drop, load, make_ids, outcome, read_results, running_service, wait_for
from daemon_helpers import write_config as write_test_config
from prometheus_client.parser import text_string_to_metric_families
from resilience_helpers import spawn_daemon

from orchestrator.clock import SystemClock
from orchestrator.core.model import InputState
from orchestrator.daemon.service import Service
from orchestrator.sandbox import Sandbox
from orchestrator.store.sqlite import Store

TTL_S = 6.0


async def get(service: Service, page: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{service.health_port}/{page}"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.text()


def gauge(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "compliance_orchestrator_" + name:
                return float(sample.value)
    raise AssertionError(f"no {name} in /metrics")


async def test_a_standby_claims_sends_nothing_then_takes_over_and_delivers(
    tmp_path: Path, sandbox: Sandbox,
) -> None:
    path = write_test_config(tmp_path, sandbox.base_url)
    path.write_text(path.read_text() + '\n[health]\nenabled = true\nhost = "127.0.0.1"\n'
                    'port = 0\n\n[service]\nhost_id = "node-b"\n\n'
                    f'[store]\nlease_ttl_s = {TTL_S}\n')
    config = load(path)
    (tmp_path / "state").mkdir()
    other = await Store.open(tmp_path / "state" / "state.db", SystemClock(), host_id="node-a")
    try:
        epoch = await other.acquire_lease("node-a", 3600.0)  # another host leads
        assert epoch == 1
        ids = make_ids(3, 80)
        async with running_service(config) as service:
            before = len(sandbox.request_log)
            drop(tmp_path, "tweets", "ids.txt", ids)
            await wait_for(lambda: bool(service.store) and _queued(tmp_path), timeout=30,
                           what="the standby claiming and validating")
            assert service.cluster is not None and not service.cluster.is_leader
            status, body = await get(service, "healthz")
            health = json.loads(body)
            assert (status, health["role"], health["leader"]) == (200, "standby", "node-a")
            assert health["reason"] == "standby: ready to take over"
            _, metrics = await get(service, "metrics")
            assert gauge(metrics, "leader") == 0
            assert len(sandbox.request_log) == before, "a standby sends nothing to X"
            await other.release_lease("node-a", epoch)  # node-a stops cleanly
            await wait_for(lambda: outcome(tmp_path, "tweets", "ids.txt") == "delivered",
                           timeout=30, what="node-b taking over and delivering")
            assert service.cluster.is_leader and service.cluster.epoch == 2
            _, metrics = await get(service, "metrics")
            assert gauge(metrics, "leader") == 1
            assert 0 <= gauge(metrics, "lease_age_seconds") < TTL_S
            agents = {r.user_agent for r in sandbox.request_log[before:]}
            assert agents and all(a is not None and a.endswith(" host/node-b") for a in agents)
        assert read_results(tmp_path, "tweets", "ids") == sandbox.expected_results("tweets", ids)
        view = await other.cluster_view()
        assert view.holder is None and view.epoch == 2  # released at the clean stop
        assert {h.host_id: h.role for h in view.hosts} == {"node-b": "stopped"}
        rows = await other.events_after(0)
        assert {r["host_id"] for r in rows if r["kind"] == "inbox.claiming"} == {"node-b"}
        assert len(sandbox.jobs()) == 1
    finally:
        await other.close()


def _queued(workdir: Path) -> bool:
    conn = sqlite3.connect(workdir / "state" / "state.db")
    try:
        row = conn.execute("SELECT COUNT(*) FROM inputs WHERE state = ?",
                           (str(InputState.QUEUED),)).fetchone()
    finally:
        conn.close()
    return bool(row and row[0])


async def test_a_leader_whose_lease_is_taken_stops_and_exits_1(
    tmp_path: Path, sandbox: Sandbox,
) -> None:
    path = write_test_config(tmp_path, sandbox.base_url)
    path.write_text(path.read_text() + '\n[service]\nhost_id = "node-a"\n\n'
                    f'[store]\nlease_ttl_s = {TTL_S}\n')
    log_path = tmp_path / "daemon.log"
    process = spawn_daemon(path, log_path)
    try:
        db = tmp_path / "state" / "state.db"
        await wait_for(lambda: db.exists() and _holder(db) == "node-a", timeout=30,
                       what="node-a leading")
        # Another host takes the lease (as if node-a had stalled past the TTL).
        conn = sqlite3.connect(db, isolation_level=None, timeout=10)
        try:
            conn.execute("UPDATE lease SET holder = 'node-x', epoch = epoch + 1,"
                         " expires_at = '2999-01-01T00:00:00.000000+00:00'")
        finally:
            conn.close()
        await wait_for(lambda: process.poll() is not None, timeout=TTL_S * 2,
                       what="node-a exiting")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert process.returncode == 1
    lines = [json.loads(line[line.index("{"):]) for line in log_path.read_text().splitlines()
             if "{" in line]
    lost = [line for line in lines if line.get("event") == "cluster.lease_lost"]
    assert lost and lost[0]["reason"] == "lease_taken"
    assert "another host holds the lease" in lost[0]["message"]
    assert any(line.get("event") == "service.lease_lost" for line in lines)


def _holder(db: Path) -> str | None:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute("SELECT holder FROM lease").fetchone()
    except sqlite3.OperationalError:
        return None  # not migrated yet
    finally:
        conn.close()
    return None if row is None else row[0]
