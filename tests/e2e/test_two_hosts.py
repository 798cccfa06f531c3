"""Two hosts, one PostgreSQL store, one shared folder tree (issue 12): real `run` processes
with different host_ids against one sandbox. The leader is killed with SIGKILL at random
points of a job's life >= 20 times: every input is delivered exactly once, no remote job name
is used twice, no job is left behind to block the slot. And fencing: the leader's database
connections are cut mid-upload; from the sandbox's request log (each request names its host
in the User-Agent), no request of the old leader ARRIVES after the standby's first one.

These need the PostgreSQL backend (branch wave4-pg: store.backend = "postgresql" and
tests/helpers/pg_server.py). Without it they skip, saying so; on SQLite two hosts cannot
share a store (one local file), so the cluster logic is covered there by
tests/daemon/test_cluster.py and tests/store/test_lease.py.
"""

from __future__ import annotations

import dataclasses
import json
import random
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from daemon_helpers import drop, make_ids, outcome, read_results, wait_for
from resilience_helpers import spawn_daemon, write_config_ex

from orchestrator.config import StoreConfig
from orchestrator.sandbox import Sandbox

pytest.importorskip(
    "pg_server", reason="two-host tests need the PostgreSQL backend (tests/helpers/pg_server.py "
    "from branch wave4-pg); they run once it is merged")
if "dsn" not in {f.name for f in dataclasses.fields(StoreConfig)}:
    pytest.skip("two-host tests need the daemon's PostgreSQL backend (store.dsn, wave4-pg); "
                "they run once it is merged", allow_module_level=True)

TTL_S = 6.0  # the shortest lease the config allows: failovers in seconds
HOSTS = ("node-a", "node-b")
KILLS = 20


def _toml(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


def host_config(shared: Path, host: str, base_url: str, store: dict[str, Any]) -> Path:
    """One host's config: its own state_dir (lock, backups), the shared inbox/outbox/spool."""
    home = shared / "hosts" / host
    home.mkdir(parents=True, exist_ok=True)
    path = write_config_ex(home, base_url, extra={"paths": {
        "inbox": str(shared / "inbox"), "outbox": str(shared / "outbox"),
        "state_dir": str(home / "state"), "spool_dir": str(shared / "spool")}})
    sections = {"service": {"host_id": host, "stop_grace_s": 2.0},
                "store": {"backend": "postgresql", "lease_ttl_s": TTL_S, **store}}
    text = path.read_text()
    for name, values in sections.items():
        text += f"\n[{name}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in values.items())
    path.write_text(text)
    return path


class Database:
    """One fresh database on wave4-pg's session server (tests/helpers/pg_server.py)."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.name = f"two_hosts_{uuid.uuid4().hex[:10]}"
        server.psql(f"CREATE DATABASE {self.name}")
        self.dsn = server.dsn(self.name)

    def query(self, sql: str) -> list[list[str]]:
        out = self.server.psql(sql, dbname=self.name)
        return [line.split("|") for line in out.splitlines() if line]


@pytest.fixture
def pg(pg_server: Any) -> Database:
    return Database(pg_server)


def store_keys(pg: Database) -> dict[str, Any]:
    return {"dsn": pg.dsn}  # adapt to wave4-pg's [store] keys if they differ


def lease_holder(pg: Database) -> tuple[str | None, str | None]:
    """(holder, the state of the oldest open batch), read straight from the database."""
    try:
        rows = pg.query("SELECT holder FROM lease WHERE name = 'leader'")
        batch = pg.query("SELECT state FROM batches WHERE state NOT IN ('done', 'failed',"
                         " 'cancelled') ORDER BY id LIMIT 1")
    except RuntimeError:  # not migrated yet
        return None, None
    holder = rows[0][0] if rows and rows[0][0] else None
    return holder, (batch[0][0] if batch else None)


class Hosts:
    def __init__(self, shared: Path, sandbox: Sandbox, pg: Database) -> None:
        self.configs = {h: host_config(shared, h, sandbox.base_url, store_keys(pg))
                        for h in HOSTS}
        self.logs = {h: shared / f"{h}.log" for h in HOSTS}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, host: str) -> None:
        self.procs[host] = spawn_daemon(self.configs[host], self.logs[host])

    def kill(self, host: str) -> None:
        proc = self.procs.pop(host)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()


def remote_names(sandbox: Sandbox) -> list[str]:
    return [str(job.get("name")) for job in sandbox.jobs()]


@pytest.mark.timeout(900)
async def test_kill_the_leader_20_times_every_input_once_no_duplicate_jobs(
    tmp_path: Path, sandbox: Sandbox, pg: Database,
) -> None:
    rng = random.Random(12)
    hosts = Hosts(tmp_path, sandbox, pg)
    files: dict[str, list[str]] = {}
    takeovers: list[float] = []
    stages: list[str | None] = []
    try:
        for host in HOSTS:
            hosts.start(host)
        kills = 0
        while kills < KILLS:
            name = f"f{len(files):02d}.txt"  # a new name every round, kill or not
            files[name] = make_ids(100 + len(files), rng.randrange(50, 400))
            drop(tmp_path, "tweets", name, files[name])
            # Let the job reach a random point (creating ... delivering), then kill the leader.
            await anyio.sleep(rng.uniform(0.0, 2.0))
            holder, _stage = lease_holder(pg)
            if holder is None or holder not in hosts.procs:
                await anyio.sleep(0.5)
                continue
            hosts.kill(holder)
            killed_at = time.monotonic()
            kills += 1
            stages.append(_stage)
            # The other host takes over within the TTL; the killed one comes back as standby.
            await wait_for(lambda h=holder: lease_holder(pg)[0] not in (None, h),
                           timeout=TTL_S * 4, what="the standby taking over")
            takeovers.append(time.monotonic() - killed_at)
            hosts.start(holder)
        await wait_for(lambda: all(outcome(tmp_path, "tweets", n) == "delivered" for n in files),
                       timeout=300, what="every input delivered")
    finally:
        hosts.stop_all()
    for name, ids in files.items():
        stem = Path(name).stem
        assert read_results(tmp_path, "tweets", stem) == sandbox.expected_results("tweets", ids)
    outbox = sorted(p.name for p in (tmp_path / "outbox" / "tweets").iterdir())
    assert outbox == sorted(f"{Path(n).stem}{s}" for n in files
                            for s in (".jsonl", ".manifest.json")), "each input exactly once"
    names = remote_names(sandbox)
    assert len(names) == len(set(names)), f"a remote job name was used twice: {names}"
    open_jobs = [j for j in sandbox.jobs() if j.get("status") in ("created", "in_progress")]
    assert open_jobs == [], "no orphan job may block the slot"
    takeovers.sort()
    print(f"\n{KILLS} kills at stages {sorted(map(str, stages))}; takeover (kill -> new"
          f" holder) p50 {takeovers[len(takeovers) // 2]:.1f} s, max {takeovers[-1]:.1f} s"
          f" (lease_ttl_s {TTL_S})")


async def test_a_leader_cut_from_the_database_mid_upload_is_silent_before_the_standby_acts(
    tmp_path: Path, make_sandbox: Any, pg: Database,
) -> None:
    async with make_sandbox(processing_time_s=0.2) as sandbox:
        hosts = Hosts(tmp_path, sandbox, pg)
        try:
            hosts.start(HOSTS[0])
            await wait_for(lambda: lease_holder(pg)[0] == HOSTS[0], timeout=30,
                           what="node-a leading")
            hosts.start(HOSTS[1])
            # Every upload answered slowly: seconds of uploading.
            sandbox.faults.add("upload", "slow", 1000, delay=3.0)
            ids = make_ids(7, 120_000)
            drop(tmp_path, "tweets", "big.txt", ids)
            await wait_for(lambda: lease_holder(pg)[1] == "uploading", timeout=60,
                           what="the upload under way")
            # node-a's connections, found by the application_name its store sets (host_id).
            pg.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"  # noqa: S608
                     f" WHERE datname = '{pg.name}' AND pid <> pg_backend_pid()"
                     f" AND application_name LIKE '%{HOSTS[0]}%'")
            await wait_for(lambda: HOSTS[0] not in hosts.procs
                           or hosts.procs[HOSTS[0]].poll() is not None,
                           timeout=TTL_S * 3, what="the old leader exiting")
            assert hosts.procs[HOSTS[0]].returncode == 1
            sandbox.faults.clear()
            await wait_for(lambda: outcome(tmp_path, "tweets", "big.txt") == "delivered",
                           timeout=180, what="the standby delivering")
        finally:
            hosts.stop_all()
        log = [r for r in sandbox.request_log if r.host in HOSTS]
        first_b = min(r.arrived or 0 for r in log if r.host == HOSTS[1])
        last_a = max(r.arrived or 0 for r in log if r.host == HOSTS[0])
        assert last_a < first_b, "the old leader sent a request after the standby's first"
        assert len(sandbox.jobs()) == 1, "the standby adopted the job, never made a second"
        assert read_results(tmp_path, "tweets", "big") == sandbox.expected_results("tweets", ids)
