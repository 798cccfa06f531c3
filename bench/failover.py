"""(l) Several hosts on PostgreSQL (issue 12): failover time, and the store's cost.

A real PostgreSQL server is started by the benchmark itself (bench/pg_server.py: initdb +
pg_ctl from the installed binaries, a unix socket in a temp dir, no TCP); without the
binaries the row is skipped, saying so. The sandbox and every daemon talk on 127.0.0.1.

- **Failover**: two daemon processes (`host_id` node-a and node-b, one database, one
  shared inbox/outbox/spool) and one job kept in `waiting` (the sandbox's processing time is
  an hour), polled by the leader. Each trial kills the leader with SIGKILL and times, from the
  kill, the standby's first request to X (the sandbox's request log names each request's
  host in the User-Agent; the bench reads it every 10 ms). The killed host is then restarted
  and waited for as the standby before the next trial; the kills are spread over the
  leader's renewal cycle (trial i waits i/trials of a renewal interval after that). The
  figure is set against the configured `store.lease_ttl_s`, in the same run: the lease
  expires at most one TTL after the kill (its last renewal came before it), and the standby
  wakes just after the lease it read can expire, so a takeover within the TTL is the design
  (TTL - TTL/6 on average), then the first request within a poll interval (1 s here). The
  time to `cluster.leader` in the new leader's log (the takeover itself) is in the note.
- **1,000 small files, PostgreSQL vs SQLite**: one daemon, the same tuned settings, 1,000
  files of 100 IDs dropped at once (packed into one job, the sandbox's processing time 0):
  wall time from the first rename to the last manifest on each backend, one after the other in
  the same run, and the ratio PostgreSQL / SQLite. The store does the per-file work there
  (claim rows, batch forming, one delivery transaction per input).
"""

from __future__ import annotations

import shutil
import signal
import statistics
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench._common import (
    FIRST_ID,
    TUNED_SETTINGS,
    Daemon,
    Figure,
    Skipped,
    describe_settings,
    drop,
    id_lines,
    rejected,
    sandbox,
    stage,
    wait_until,
)
from bench.pg_server import PgServer, find_bindir, missing, start_server
from orchestrator.sandbox import SandboxProcess

KEY = "l"
HOSTS = ("node-a", "node-b")
FILES = 1000
IDS_PER_FILE = 100
# The poll settings of the failover run: the new leader's first request is the next status
# poll of the job in flight, at most 1 s after it took over (the default caps the spacing at
# a tenth of the job's age: seconds, after the minutes the trials take).
FAILOVER_POLL = {"poll.initial_interval_s": 0.25, "poll.max_interval_s": 1.0}
SLACK_S = 0.5  # the standby's 0.1 s after the expiry, its round and a loaded machine


def measure(workdir: Path, trials: int, ttl_s: float, files: int = FILES) -> list[Figure]:
    reason = missing()
    bindir = find_bindir()
    if reason is not None or bindir is None:
        raise Skipped(f"needs PostgreSQL server binaries: {reason} (install the Debian "
                      "`postgresql` package, or set PG_BINDIR)")
    workdir.mkdir(parents=True, exist_ok=True)
    server = start_server(bindir, durable=True)
    try:
        figures = failover(workdir / "failover", server, trials, ttl_s)
        figures += backends(workdir / "files", server, files)
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)
    return figures


def _pg_settings(server: PgServer, dbname: str, shared: Path) -> dict[str, Any]:
    server.psql(f"CREATE DATABASE {dbname}")
    return {"store.backend": "postgresql", "store.dsn": server.dsn(dbname),
            "paths.spool_dir": str(shared / "spool")}


# ---- failover -------------------------------------------------------------------------------


def _host_of(record: Any) -> str | None:
    return getattr(record, "host", None)


def _first_request_of(sb: SandboxProcess, host: str, since: int, timeout: float) -> float:
    """Poll the sandbox's request log until `host` sent a request (after entry `since`);
    the time.monotonic() it was seen."""
    seen: list[float] = []

    def found() -> bool:
        log = sb.remote.requests()
        if any(_host_of(r) == host for r in log[since:]):
            seen.append(time.monotonic())
            return True
        return False

    wait_until(found, timeout, f"{host}'s first request to X", interval=0.01)
    return seen[0]


def _count(daemon: Daemon, event: str) -> int:
    return len(daemon.events(event)) if daemon.log_path.exists() else 0


def _leader_logged_at(daemon: Daemon, after: int) -> float | None:
    """Epoch seconds of the `cluster.leader` event number `after` (0-based) in its log."""
    events = daemon.events("cluster.leader")
    if len(events) <= after:
        return None
    return datetime.fromisoformat(events[after]["timestamp"]).timestamp()


def failover(workdir: Path, server: PgServer, trials: int, ttl_s: float) -> list[Figure]:
    shared = workdir / "shared"
    for name in ("inbox/tweets", "outbox", "spool"):
        (shared / name).mkdir(parents=True, exist_ok=True)
    settings = {**TUNED_SETTINGS, **FAILOVER_POLL, **_pg_settings(server, "failover", shared),
                "store.lease_ttl_s": ttl_s, "paths.inbox": str(shared / "inbox"),
                "paths.outbox": str(shared / "outbox")}
    renew_s = ttl_s / 3
    samples: list[float] = []
    takeovers: list[float] = []
    with sandbox(workdir / "sb", "--processing-time", "3600") as sb:
        daemons: dict[str, Daemon] = {}
        for host in HOSTS:
            home = workdir / host
            home.mkdir(parents=True)
            daemons[host] = Daemon(home, sb.base_url, sb.token,
                                   {**settings, "service.host_id": host})
        try:
            daemons["node-a"].start()
            wait_until(lambda: _count(daemons["node-a"], "cluster.leader") >= 1, 60,
                       "node-a leading")
            daemons["node-b"].start()
            wait_until(lambda: _count(daemons["node-b"], "cluster.standby") >= 1, 60,
                       "node-b standing by")
            part = stage(shared, "one.txt", id_lines(FIRST_ID, 1000))
            drop(part)
            # The job is created, uploaded and polled: the leader is talking to X.
            wait_until(lambda: any(r.path.startswith("/2/compliance/jobs/")
                                   for r in sb.remote.requests()), 60, "the first poll")
            leader, standby = "node-a", "node-b"
            for trial in range(trials):
                time.sleep(renew_s * trial / trials)  # spread the kills over a renewal cycle
                since = len(sb.remote.requests())
                led_before = _count(daemons[standby], "cluster.leader")
                killed = daemons[leader]
                assert killed.process is not None
                killed_wall, killed_at = time.time(), time.monotonic()
                killed.process.send_signal(signal.SIGKILL)
                killed.process.wait(10)
                killed.process = None
                first = _first_request_of(sb, standby, since, ttl_s * 4)
                samples.append(first - killed_at)
                took = _leader_logged_at(daemons[standby], led_before)
                if took is not None:
                    takeovers.append(took - killed_wall)
                standbys_before = _count(killed, "cluster.standby")
                killed.start()

                def standing_by(k: Daemon = killed, n: int = standbys_before) -> bool:
                    return _count(k, "cluster.standby") > n

                wait_until(standing_by, 60, f"{leader} back as the standby")
                leader, standby = standby, leader
        finally:
            for daemon in daemons.values():
                daemon.stop()
        if rejected(shared):
            raise AssertionError(f"inputs rejected: {rejected(shared)}")
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    note = (f"{trials} SIGKILLs of the leader (two daemons, one PostgreSQL database, one job in "
            f"waiting); lease_ttl_s {ttl_s:g} (renewal every {renew_s:.1f} s); "
            f"kill -> the standby's first X request: {', '.join(f'{s:.2f}' for s in samples)} s;"
            f" kill -> `cluster.leader` logged (the takeover): p50 "
            f"{statistics.median(takeovers) if takeovers else float('nan'):.2f} s, max "
            f"{max(takeovers, default=float('nan')):.2f} s; "
            f"{describe_settings({**TUNED_SETTINGS, **FAILOVER_POLL})}")
    design = ttl_s + FAILOVER_POLL["poll.max_interval_s"] + SLACK_S
    return [
        Figure(key=KEY, measure=f"failover, leader kill -> standby's first X request, p50 of"
                                f" {trials}",
               value=p50, unit="s", baseline=ttl_s, baseline_label="store.lease_ttl_s",
               ratio=p50 / ttl_s, target="informational", passed=None, note=note,
               extra={"samples_s": samples, "takeover_s": takeovers, "ttl_s": ttl_s}),
        Figure(key=KEY, measure=f"failover, leader kill -> standby's first X request, max of"
                                f" {trials}",
               value=ordered[-1], unit="s", baseline=ttl_s, baseline_label="store.lease_ttl_s",
               ratio=ordered[-1] / ttl_s,
               target=f"<= TTL + poll + {SLACK_S:g} s ({design / ttl_s:.2f}x)",
               passed=ordered[-1] <= design),
    ]


# ---- 1,000 small files: PostgreSQL vs SQLite ------------------------------------------------


def _manifests(outbox: Path) -> int:
    folder = outbox / "tweets"
    if not folder.is_dir():
        return 0
    return sum(1 for p in folder.iterdir() if p.name.endswith(".manifest.json"))


def _files_run(workdir: Path, settings: dict[str, Any], files: int) -> float:
    """Drop `files` files of IDS_PER_FILE IDs at once; seconds to the last manifest."""
    workdir.mkdir(parents=True)
    parts = [stage(workdir, f"small-{i:04d}.txt",
                   id_lines(FIRST_ID + i * IDS_PER_FILE * 7, IDS_PER_FILE, step=7))
             for i in range(files)]
    with sandbox(workdir / "sb", "--processing-time", "0") as sb, \
            Daemon(workdir, sb.base_url, sb.token, settings) as daemon:
        started = time.monotonic()
        for part in parts:
            drop(part)
        done = wait_until(lambda: _manifests(workdir / "outbox") >= files, 600,
                          f"{files} manifests", interval=0.01, alive=daemon.process)
    if rejected(workdir):
        raise AssertionError(f"inputs rejected: {rejected(workdir)[:5]}")
    return done - started


def backends(workdir: Path, server: PgServer, files: int) -> list[Figure]:
    sqlite_s = _files_run(workdir / "sqlite", dict(TUNED_SETTINGS), files)
    pg_dir = workdir / "postgresql"
    pg_s = _files_run(pg_dir, {**TUNED_SETTINGS, **_pg_settings(server, "files", pg_dir)},
                      files)
    return [Figure(
        key=KEY, measure=f"{files} files x {IDS_PER_FILE} IDs at once, PostgreSQL store",
        value=pg_s, unit="s", baseline=sqlite_s, baseline_label="the same on SQLite",
        ratio=pg_s / sqlite_s, target="informational", passed=None,
        note=(f"drop -> last manifest, one daemon, {describe_settings(TUNED_SETTINGS)}, "
              "sandbox processing time 0; SQLite first, then PostgreSQL (a local server the "
              "bench started, on a unix socket, fsync on: the network round trips to a "
              "remote database server are not in this figure)"),
        extra={"sqlite_s": sqlite_s, "postgresql_s": pg_s},
    )]
