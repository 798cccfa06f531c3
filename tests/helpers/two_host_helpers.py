"""Two daemon hosts on one PostgreSQL database and one shared folder tree (issue 12), and a
driver that kills the leader at a chosen stage of a job's life.

`Cluster` runs real `python -m orchestrator run` processes (host_ids node-a, node-b) and reads
the database directly (psycopg, autocommit) to see who holds the lease and where the batch
is. `StageKiller` makes each stage last long enough to be hit on purpose, with the
sandbox's scripted faults (a slow create; slow 256 KiB resumable-upload chunks; a download
cut half-way and its retry held), waits for the stage with a deadline (never a blind
sleep), sends SIGKILL, and then reads the stage again: the dead leader cannot write any
more, so what the database says after the kill is where the kill landed.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import psycopg
from resilience_helpers import spawn_daemon, write_config_ex

from orchestrator.sandbox import Sandbox

HOSTS = ("node-a", "node-b")
TTL_S = 6.0  # the shortest lease the config allows: failovers in seconds
CHUNK = 256 << 10  # resumable upload chunks: a 4 MB body is ~16 PUTs
STAGES = ("creating", "uploading", "waiting", "downloading", "delivering")
_ORDER = {s: i for i, s in enumerate(("queued", *STAGES, "done", "failed", "cancelled"))}


def _toml(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


def host_config(shared: Path, host: str, base_url: str, store: dict[str, Any],
                jobs: dict[str, Any] | None = None) -> Path:
    """One host's config: its own state_dir (lock, backups), the shared inbox/outbox/spool."""
    home = shared / "hosts" / host
    home.mkdir(parents=True, exist_ok=True)
    extra: dict[str, dict[str, Any]] = {"paths": {
        "inbox": str(shared / "inbox"), "outbox": str(shared / "outbox"),
        "state_dir": str(home / "state"), "spool_dir": str(shared / "spool")}}
    if jobs:
        extra["jobs"] = jobs
    path = write_config_ex(home, base_url, extra=extra)
    sections = {"service": {"host_id": host, "stop_grace_s": 2.0},
                "store": {"backend": "postgresql", "lease_ttl_s": TTL_S, **store}}
    text = path.read_text()
    for name, values in sections.items():
        text += f"\n[{name}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in values.items())
    path.write_text(text)
    return path


class Database:
    """One fresh database on the session's server (tests/helpers/pg_server.py)."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.name = f"two_hosts_{uuid.uuid4().hex[:10]}"
        server.psql(f"CREATE DATABASE {self.name}")
        self.dsn: str = server.dsn(self.name)
        self._conn: psycopg.Connection[Any] | None = None

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of `sql` ([] while the daemons have not migrated the database yet)."""
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, autocommit=True)
        try:
            return list(self._conn.execute(sql, params).fetchall())
        except psycopg.errors.UndefinedTable:
            return []

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def cut(self, host: str) -> None:
        """End every connection of `host`'s daemon (found by the application_name its store
        sets), as a network partition or a server restart would."""
        self.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                   " WHERE datname = %s AND pid <> pg_backend_pid()"
                   " AND application_name LIKE %s", (self.name, f"%{host}%"))

    def holder(self) -> str | None:
        rows = self.query("SELECT holder FROM lease WHERE name = 'leader'")
        return str(rows[0][0]) if rows and rows[0][0] else None

    def open_batch(self) -> int | None:
        rows = self.query("SELECT id FROM batches WHERE state NOT IN ('done', 'failed',"
                          " 'cancelled') ORDER BY id LIMIT 1")
        return int(rows[0][0]) if rows else None

    def state(self, batch_id: int) -> str:
        return str(self.query("SELECT state FROM batches WHERE id = %s", (batch_id,))[0][0])

    def upload_bytes(self, batch_id: int) -> int:
        return int(self.query("SELECT upload_bytes FROM batches WHERE id = %s",
                              (batch_id,))[0][0])

    def claiming(self) -> int:
        return int(self.query("SELECT count(*) FROM inputs WHERE state = 'claiming'")[0][0])

    def input_states(self) -> dict[str, str]:
        return {str(r[0]): str(r[1]) for r in self.query("SELECT name, state FROM inputs")}

    def batch_states(self) -> list[tuple[Any, ...]]:
        return self.query("SELECT id, state, attempt, x_job_name, last_error FROM batches"
                          " ORDER BY id")

    def delivered(self, batch_id: int) -> tuple[int, int]:
        """(inputs of the batch delivered, inputs of the batch)."""
        row = self.query(
            "SELECT count(*) FILTER (WHERE i.state = 'delivered'), count(*) FROM batch_inputs b"
            " JOIN inputs i ON i.id = b.input_id WHERE b.batch_id = %s", (batch_id,))[0]
        return int(row[0]), int(row[1])


class Cluster:
    """The two host processes."""

    def __init__(self, shared: Path, sandbox: Sandbox, db: Database,
                 jobs: dict[str, Any] | None = None) -> None:
        self.db = db
        self.configs = {h: host_config(shared, h, sandbox.base_url, {"dsn": db.dsn}, jobs)
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

    def log_events(self, host: str, event: str) -> list[dict[str, Any]]:
        found = []
        for line in self.logs[host].read_text(errors="replace").splitlines():
            if f'"{event}"' in line:
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                if item.get("event") == event:
                    found.append(item)
        return found


async def until(condition: Callable[[], bool], timeout: float, what: str,
                interval: float = 0.005) -> None:
    """Poll `condition` (a few ms each) until true; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await anyio.sleep(interval)


def storage(record: Any, kind: str) -> bool:
    return f"/{kind}/" in record.path


@dataclass
class Kill:
    stage: str  # where the kill landed, read from the database after it
    host: str
    batch_id: int
    log_at: int  # len(sandbox.request_log) at the kill
    detail: dict[str, Any] = field(default_factory=dict)


class StageKiller:
    """Drives one job per round through the five stages, killing the leader in each chosen
    one; every kill is followed by the failover (the other host takes the lease) and the
    killed host's restart as the standby."""

    def __init__(self, cluster: Cluster, sandbox: Sandbox) -> None:
        self.cluster = cluster
        self.db = cluster.db
        self.sandbox = sandbox
        self.kills: list[Kill] = []
        self.takeovers: list[float] = []
        self._round_at = 0

    def _past(self, batch_id: int, stage: str) -> bool:
        return _ORDER[self.db.state(batch_id)] > _ORDER[stage]

    async def _kill(self, batch_id: int, **detail: Any) -> Kill:
        host = self.db.holder()
        assert host is not None and host in self.cluster.procs, f"no live leader ({host})"
        self.cluster.kill(host)
        killed_at = time.monotonic()
        kill = Kill(self.db.state(batch_id), host, batch_id, len(self.sandbox.request_log),
                    detail)
        if kill.stage == "delivering":
            kill.detail["delivered"] = self.db.delivered(batch_id)
        self.kills.append(kill)
        # The other host takes over within the TTL; then the killed one comes back as standby
        # (restarted at once it would take its own lease back: same host, the lock is free).
        await until(lambda: self.db.holder() not in (None, host), TTL_S * 4,
                    "the standby taking over", interval=0.02)
        self.takeovers.append(time.monotonic() - killed_at)
        self.cluster.start(host)
        return kill

    async def round(self, drop: Callable[[], None], want: set[str]) -> None:
        """Drop one job's inputs (`drop`), kill the leader in each stage of `want`."""
        faults = self.sandbox.faults
        self._round_at = len(self.sandbox.request_log)
        create = faults.add("create", "slow", 1, delay=2.0) if "creating" in want else None
        faults.add("upload", "slow", 10_000, delay=0.25)  # cleared once the upload is done
        drop()
        await until(lambda: self.db.open_batch() is not None, 60, "the inputs' batch")
        batch_id = self.db.open_batch()
        assert batch_id is not None
        if create is not None:
            # The POST arrived (the fault took it) and is held 2 s: the leader is creating.
            # And no claim is half-done (a claim a dead host left is settled only after two
            # minutes, by design): the kill lands in the job, not in the inbox.
            await until(lambda: (create.remaining <= 0 and self.db.claiming() == 0)
                        or self._past(batch_id, "creating"), 60, "the create request")
            await self._kill(batch_id)
        if "uploading" in want:
            # A few chunks acknowledged (308) by the current leader: mid-upload.
            await until(lambda: self._chunks_acked() >= 3 or self._past(batch_id, "uploading"),
                        90, "the upload under way")
            await self._kill(batch_id, acked=self._chunks_acked(),
                             chunks=math.ceil(self.db.upload_bytes(batch_id) / CHUNK))
        await until(lambda: self._past(batch_id, "uploading"), 120, "the upload done")
        faults.clear()
        held = None
        if "downloading" in want:
            # The results cut after 64 KiB (kept on disk), the retry held 10 s.
            faults.add("download", "truncate", 1, after_bytes=64 << 10)
            held = faults.add("download", "slow", 1, delay=10.0)
        if "waiting" in want:  # uploaded; the sandbox takes 3 s to process it
            await self._kill(batch_id)
        if held is not None:
            await until(lambda: held.remaining <= 0 or self._past(batch_id, "downloading"),
                        90, "the download resumed and held")
            await self._kill(batch_id)
        if "delivering" in want:
            await until(lambda: self._mid_delivery(batch_id) or self._past(batch_id,
                                                                          "delivering"),
                        120, "the delivery under way", interval=0.002)
            await self._kill(batch_id)
        await until(lambda: self.db.state(batch_id) == "done", 120, "the batch done",
                    interval=0.05)
        faults.clear()

    def _mid_delivery(self, batch_id: int) -> bool:
        if self.db.state(batch_id) != "delivering":
            return False
        done, _total = self.db.delivered(batch_id)
        return done >= 1

    def _chunks_acked(self) -> int:
        """308s to upload chunks since the last kill, from the current leader."""
        since = max(self._round_at, self.kills[-1].log_at if self.kills else 0)
        return sum(1 for r in self.sandbox.request_log[since:]
                   if storage(r, "submission") and r.method == "PUT" and r.status == 308)

