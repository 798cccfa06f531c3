"""The operator commands on `[store] backend = "postgresql"` (a real throwaway server), as an
operator sees them: `status` and `jobs` print the same as on SQLite for the same state (the
cluster lines included), the commands that change the store work through the store's write
model without the lease, `backup` gives the pg_dump advice, and an unreachable server is one
line naming it. The database password never appears in any output."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from admin_helpers import SIGNED, Run, arun_cli, assert_no_secrets, offline_config, run_cli
from clocks import FakeClock
from daemon_helpers import TOKEN, write_config
from pg_server import PgServer

from orchestrator.clock import SystemClock
from orchestrator.config import load_config
from orchestrator.core import machine, operator
from orchestrator.core.decision import Decision
from orchestrator.core.model import BatchState, InputState, JobType, RemoteJob, RemoteStatus
from orchestrator.daemon.lock import StateLock
from orchestrator.layout import Layout
from orchestrator.sandbox import Sandbox
from orchestrator.store.pg_migrate import pg_migrations
from orchestrator.store.postgresql import PostgresStore
from orchestrator.store.sqlite import EventNote, Store

PASSWORD = "pw-Zq8-not-for-your-eyes"
# Three days ago and a half hour: every deadline and duration the commands print reads the
# same for a while (`3d00h`, `3d 23h`), so two runs a few seconds apart agree.
SINCE = timedelta(days=3, minutes=30)


def pg_config(workdir: Path, dsn: str, host_id: str = "node-a", base_url: str = "") -> Path:
    path = write_config(workdir, base_url) if base_url else offline_config(workdir)
    (workdir / "spool").mkdir(exist_ok=True)  # a cluster's spool is shared, beside the inbox
    text = path.read_text().replace("[paths]\n", '[paths]\nspool_dir = "spool"\n', 1)
    path.write_text(text + f'\n[service]\nhost_id = "{host_id}"\n\n'
                    f'[store]\nbackend = "postgresql"\ndsn = "{dsn}"\n')
    return path


@pytest.fixture(autouse=True)
def db_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command reads this password (the test server trusts local connections, so it is
    sent only if asked for): it must never be printed."""
    monkeypatch.setenv("PGPASSWORD", PASSWORD)


def no_password(*runs: Run) -> None:
    for run in runs:
        assert PASSWORD not in run.out + run.err
        assert_no_secrets(run.out, run.err)


async def _queued(store: Store, layout: Layout, name: str, job_type: JobType) -> Any:
    item = await store.insert_claiming(job_type=job_type, name=name, out_stem=Path(name).stem,
                                       spool_name=f"{name}.spool", inode=1, size_bytes=6)
    (layout.spool / item.spool_name).write_bytes(b"1\n2\n3\n")
    await store.move_input(item.id, [InputState.CLAIMING], InputState.CLAIMED, event="t")
    return await store.move_input(item.id, [InputState.CLAIMED], InputState.QUEUED, event="t",
                                  id_count=3)


async def build_state(store: Store, layout: Layout) -> None:
    """What a daemon leaves: a batch uploading and backing off after a 503 (a signed URL
    stored), a queued batch, a queued file, a rejected file, a pause; the lease and two
    hosts' heartbeats are written on the real clock by `cluster`."""
    now = store.clock.now()
    a = await _queued(store, layout, "a.txt", JobType.TWEETS)
    batch = await store.form_batch(JobType.TWEETS, [(a.id, 0, 0, 3)], upload_name="a.ids",
                                   id_count=3, upload_bytes=6)
    creating = await store.apply(batch, machine.start_attempt(batch, 1))
    job = RemoteJob(id="77", type=JobType.TWEETS, status=RemoteStatus.CREATED, created_at=now,
                    upload_url=SIGNED, upload_expires_at=now + timedelta(minutes=15),
                    download_url=SIGNED, download_expires_at=now + timedelta(days=7))
    uploading = await store.apply(creating, machine.decide(
        creating, machine.JobCreated(job), now, machine.Policy(), random.Random(0)))
    await store.apply(uploading, Decision(
        BatchState.UPLOADING, "step.retry",
        {"next_attempt_at": now + timedelta(days=5), "stage_retries": 1,
         "last_error": "RetryableError: HTTP 503 from storage"},
        detail={"stage": "upload", "error": "HTTP 503", "attempt": 1}))
    d = await _queued(store, layout, "d.txt", JobType.USERS)
    await store.form_batch(JobType.USERS, [(d.id, 0, 0, 3)], upload_name="d.ids", id_count=3,
                           upload_bytes=6)
    await _queued(store, layout, "b.txt", JobType.TWEETS)
    c = await store.insert_claiming(job_type=JobType.USERS, name="c.txt", out_stem="c",
                                    spool_name="c.spool", inode=2, size_bytes=9)
    await store.move_input(c.id, [InputState.CLAIMING], InputState.CLAIMED, event="t")
    await store.move_input(c.id, [InputState.CLAIMED], InputState.REJECTED, event="input.rejected",
                           error_json={"reason": "bad_lines", "message": "c.txt: line 2"})
    await store.record_events([EventNote("xapi.auth_failed", detail={"status": 401})])
    change = operator.pause(None, now, by="operator", reason="kernel upgrade")
    assert change is not None
    await store.change_setting(change)


async def cluster(store: Store, _layout: Layout) -> None:
    """node-a leads (a lease for 5 minutes), node-b stands by: heartbeats of both."""
    assert await store.acquire_lease("node-a", 300.0) is not None
    await store.heartbeat("node-a", "leader", 1234, "0.3.0")
    await store.heartbeat("node-b", "standby", 987, "0.3.0")


async def make_state(workdir: Path, dsn: str | None, start: datetime | None = None) -> Path:
    """The state above on SQLite (dsn None) or PostgreSQL, written at `start` (default: SINCE
    ago); returns the config."""
    workdir.mkdir(exist_ok=True)
    config = pg_config(workdir, dsn) if dsn else offline_config(workdir)
    layout = Layout.from_config(load_config(config))
    layout.ensure()
    for clock, write in ((FakeClock(start or datetime.now(UTC) - SINCE), build_state),
                         (SystemClock(), cluster)):
        store = await (PostgresStore.open_pg(dsn, clock, db_clock=False) if dsn
                       else Store.open(layout.db_path, clock))
        try:
            await write(store, layout)
        finally:
            await store.close()
    return config


_AGES = re.compile(r"(renewed|expires in) [^,)]+?(?=( ago,|\)))|last heartbeat [^\n]*")
_VOLATILE_KEYS = {"state_db", "key", "lease_age_s", "lease_expires_in_s", "last_seen",
                  "last_seen_age_s", "started_at", "duration_s"}


def steady(value: Any) -> Any:
    """Without what moves between two runs a few seconds apart (ages, seconds left, the
    database's location), for comparing SQLite's answer with PostgreSQL's."""
    if isinstance(value, str):
        return _AGES.sub("<age>", value)
    if isinstance(value, dict):
        return {k: steady(v) for k, v in value.items()
                if k not in _VOLATILE_KEYS and not k.endswith("_in_s")}
    if isinstance(value, list):
        return [steady(v) for v in value]
    return value


READS = (("status",), ("status", "--json"), ("status", "--files"), ("status", "--files", "--json"),
         ("jobs",), ("jobs", "--json"))


async def test_status_and_jobs_read_the_same_on_postgresql_as_on_sqlite(
    tmp_path: Path, pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    answers: dict[str, list[Any]] = {}
    start = datetime.now(UTC) - SINCE  # one instant for both: the times printed are equal
    for backend, dsn in (("sqlite", None), ("postgresql", pg_dsn)):
        config = await make_state(tmp_path / backend, dsn, start)
        runs = [run_cli(capsys, *argv, "--config", config) for argv in READS]
        for argv, run in zip(READS, runs, strict=True):
            assert run.code == 0, f"{backend} {argv}: {run.err}"
        no_password(*runs)
        answers[backend] = [steady(r.json if "--json" in argv else r.out)
                            for argv, r in zip(READS, runs, strict=True)]
    assert answers["postgresql"] == answers["sqlite"]
    status, _status_json, files, _files_json, jobs, jobs_json = answers["postgresql"]
    assert "cluster: leader node-a (epoch 1, lease <age> ago, <age>)\n  standbys: node-b\n" \
        "  host node-a: leader, pid 1234, version 0.3.0, <age>\n" \
        "  host node-b: standby, pid 987, version 0.3.0, <age>\n" in status
    assert "PAUSED since" in status and "(kernel upgrade)" in status
    assert "batch 1 tweets [a.txt] 3 IDs: uploading, attempt 1, remote 77" in status
    assert "upload window closed 3d 0h ago" in status and "HTTP 503" in status
    assert "users  c.txt: rejected (bad_lines: line 2)" in status
    assert "xapi.auth_failed" in status
    assert "tweets b.txt  (3 IDs, queued)" in files and "b.txt" not in status
    assert "last error: RetryableError: HTTP 503 from storage" in status
    assert "in progress (uploading)" in jobs and "3d00h" in jobs
    assert [j["files"] for j in jobs_json["jobs"]] == [["d.txt"], ["a.txt"]]


async def test_status_json_on_postgresql_has_the_cluster_by_the_servers_clock(
    tmp_path: Path, pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = await make_state(tmp_path, pg_dsn)
    run = run_cli(capsys, "status", "--config", config, "--json")
    assert run.code == 0, run.err
    found = run.json
    assert found["state_db"].startswith("postgresql: host=") and "dbname=co_test_" in found[
        "state_db"]
    assert found["cluster"]["leader"] == "node-a" and found["cluster"]["standbys"] == ["node-b"]
    assert 0 <= found["cluster"]["lease_age_s"] < 300 < found["cluster"]["lease_expires_in_s"] + 300
    assert [h["host_id"] for h in found["cluster"]["hosts"]] == ["node-a", "node-b"]
    no_password(run)


async def test_the_operator_commands_change_a_postgresql_store(
    tmp_path: Path, pg_dsn: str, capsys: pytest.CaptureFixture[str], pg_server: PgServer
) -> None:
    """Each command that writes goes through the store's write model (no lease needed: the
    lease is node-a's, and nobody here holds it) and says what an operator needs to know."""
    config = await make_state(tmp_path, pg_dsn)
    runs: list[Run] = []

    async def cli(*argv: str | Path) -> Run:
        run = await arun_cli(capsys, *argv, "--config", config)
        runs.append(run)
        return run

    resume = await cli("resume")
    assert resume.code == 0 and "resumed (paused since" in resume.out, resume.err
    assert "the cluster's leader picks it up" in resume.out and "node-a: none" in resume.out
    pause = await cli("pause", "--reason", "again", "--json")
    assert pause.code == 0 and pause.json["paused"] is True and pause.json["reason"] == "again"
    retry = await cli("retry", "1")
    assert retry.code == 0 and "backing off until" in retry.out, retry.err
    assert pg_server.psql("SELECT next_attempt_at IS NULL FROM batches WHERE id = 1",
                          _db(pg_dsn)) == "t"
    cancel = await cli("cancel", "2")
    assert cancel.code == 0 and "batch 2 (users) cancelled" in cancel.out, cancel.err
    assert (tmp_path / "outbox" / "rejected" / "d.txt").exists()
    withdraw = await cli("withdraw", "b.txt")
    assert withdraw.code == 0 and "withdrew b.txt" in withdraw.out, withdraw.err
    requeue = await cli("requeue", "b.txt")
    assert requeue.code == 0 and "requeued b.txt" in requeue.out, requeue.err
    assert (tmp_path / "inbox" / "tweets" / "b.txt").exists()
    requeue_all = await cli("requeue", "--all", "--json")
    assert requeue_all.code == 0, requeue_all.err
    assert [r["file"] for r in requeue_all.json["requeued"]] == ["d.txt"]
    noted = pg_server.psql("SELECT kind FROM events WHERE kind LIKE 'operator.%' ORDER BY id",
                           _db(pg_dsn)).split()
    assert noted == ["operator.pause",  # build_state's, then ours:
                     "operator.resume", "operator.pause", "operator.retry", "operator.cancel",
                     "operator.withdraw", "operator.requeue", "operator.requeue"]
    hosts = pg_server.psql("SELECT COALESCE(host_id, '-') FROM events WHERE kind LIKE"
                           " 'operator.%' ORDER BY id", _db(pg_dsn)).split()
    assert hosts[1:] == ["node-a"] * 7  # each of ours names the host it was run on
    hooks = await cli("retry-hooks")
    assert hooks.code == 1 and "no failed hook runs" in hooks.err
    jobs = await cli("jobs")
    assert jobs.code == 0 and "cancelled by operator" in jobs.out
    assert pg_server.psql("SELECT holder FROM lease", _db(pg_dsn)) == "node-a", "lease untouched"
    no_password(*runs)


async def test_this_hosts_daemon_is_found_by_its_own_lock(
    tmp_path: Path, pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a shared store a daemon holds `daemon.<host_id>.lock`: status and jobs see it
    running, the commands name it, and `migrate` is refused while it runs."""
    config = await make_state(tmp_path, pg_dsn)
    with StateLock(tmp_path / "state", "daemon.node-a.lock"):
        status = await arun_cli(capsys, "status", "--config", config)
        jobs = await arun_cli(capsys, "jobs", "--config", config, "--json")
        resume = await arun_cli(capsys, "resume", "--config", config)
        migrate = await arun_cli(capsys, "migrate", "--config", config)
    assert status.out.startswith(f"daemon: running (pid {os.getpid()})"), status.out
    assert jobs.json["daemon_pid"] == os.getpid()
    assert f"node-a: PID {os.getpid()}" in resume.out, resume.out
    assert migrate.code == 2 and "refusing to migrate while the daemon runs" in migrate.err
    no_password(status, jobs, resume, migrate)


def _db(dsn: str) -> str:
    return dsn.rsplit("dbname=", 1)[1]


async def test_backup_migrate_check_config_and_submit_on_postgresql(
    tmp_path: Path, pg_dsn: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("X_BEARER_TOKEN", TOKEN)
    config = await make_state(tmp_path, pg_dsn)
    backup = await arun_cli(capsys, "backup", "--config", config, "--to", tmp_path / "copies")
    assert backup.code == 2 and "pg_dump" in backup.err and not (tmp_path / "copies").exists()
    migrate = await arun_cli(capsys, "migrate", "--config", config)
    assert migrate.code == 0 and "up to date (schema version" in migrate.out, migrate.err
    check = await arun_cli(capsys, "check-config", "--config", config)
    assert check.code == 0, check.err
    assert "store:" in check.out and "postgresql" in check.out and "dbname=co_test_" in check.out
    assert "password from $PGPASSWORD" in check.out
    (tmp_path / "inbox" / "tweets").mkdir(parents=True)  # the daemon makes it; submit never
    ids = tmp_path / "new.txt"
    ids.write_text("5\n6\n")
    submit = await arun_cli(capsys, "submit", ids, "--type", "tweets", "--config", config)
    assert submit.code == 0 and (tmp_path / "inbox" / "tweets" / "new.txt").exists()
    no_password(backup, migrate, check, submit)


async def test_check_config_online_reads_the_postgresql_store(
    tmp_path: Path, pg_dsn: str, sandbox: Sandbox, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--online: X accepts the token, and the store answers (read-only: its schema version);
    a server that cannot be reached is exit 1 naming it."""
    monkeypatch.setenv("X_BEARER_TOKEN", TOKEN)
    config = pg_config(tmp_path, pg_dsn, base_url=sandbox.base_url)
    (tmp_path / "inbox").mkdir()
    (tmp_path / "outbox").mkdir()
    ok = await arun_cli(capsys, "check-config", "--config", config, "--online")
    assert ok.code == 0, ok.err
    newest = max(m.version for m in pg_migrations())
    assert f"database:    reachable; schema version {newest}" in ok.out
    gone = pg_config(tmp_path, f"host={tmp_path} port=5432 dbname=gone", base_url=sandbox.base_url)
    down = await arun_cli(capsys, "check-config", "--config", gone, "--online")
    assert down.code == 1 and down.err.startswith("store unreachable: cannot connect to"
                                                  " PostgreSQL (host="), down.err
    no_password(ok, down)


def test_status_and_jobs_before_any_daemon_ran_on_the_database(
    tmp_path: Path, pg_server: PgServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty database (not migrated yet): exit 0 saying so; nothing is created in it."""
    pg_server.psql("CREATE DATABASE co_cli_empty")
    config = pg_config(tmp_path, pg_server.dsn("co_cli_empty"))
    status = run_cli(capsys, "status", "--config", config)
    jobs = run_cli(capsys, "jobs", "--config", config, "--json")
    assert status.code == jobs.code == 0, status.err + jobs.err
    assert "no state in the PostgreSQL database yet" in status.out
    assert jobs.json["note"].startswith("no state in the PostgreSQL database yet")
    assert pg_server.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
                          "co_cli_empty") == "0"
    no_password(status, jobs)


def test_an_unreachable_server_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every command that needs the store: exit 1, one line with host and database, and
    never the password; nothing is created."""
    config = pg_config(tmp_path, f"host={tmp_path} port=5432 user=co dbname=compliance")
    for argv in (("status",), ("status", "--json"), ("jobs",), ("jobs", "--json"),
                 ("pause",), ("retry", "1"), ("cancel", "1"), ("withdraw", "x.txt"),
                 ("retry-hooks",)):
        run = run_cli(capsys, *argv, "--config", config)
        assert run.code == 1, (argv, run.err)
        lines = run.err.strip().splitlines()
        assert len(lines) == 1, (argv, run.err)
        assert f"cannot connect to PostgreSQL (host={tmp_path} port=5432 dbname=compliance" \
            " user=co)" in lines[0], (argv, lines[0])
        no_password(run)
    assert not (tmp_path / "state" / "state.db").exists()


def test_a_dsn_with_a_password_is_refused_without_showing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = pg_config(tmp_path, f"host={tmp_path} dbname=co password={PASSWORD}")
    for argv in (("status",), ("jobs",), ("pause",)):
        run = run_cli(capsys, *argv, "--config", config)
        assert run.code == 2 and "without a password" in run.err, (argv, run.err)
        assert PASSWORD not in run.out + run.err  # (the advice names systemd's LoadCredential)


async def test_status_as_a_subprocess_on_postgresql(tmp_path: Path, pg_dsn: str) -> None:
    """The installed command, as an operator runs it (PGPASSWORD in its environment)."""
    config = await make_state(tmp_path, pg_dsn)
    outputs = []
    for argv in (["status"], ["jobs", "--json"]):
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator", *argv, "--config", str(config)],
            capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "PGPASSWORD": PASSWORD},
        )
        assert done.returncode == 0, done.stderr
        assert PASSWORD not in done.stdout + done.stderr
        outputs.append(done.stdout)
    assert "cluster: leader node-a" in outputs[0] and "queue:" in outputs[0]
    assert json.loads(outputs[1])["total"] == 2


def test_the_daemon_exits_1_while_the_server_is_down_so_systemd_restarts_it(
    tmp_path: Path
) -> None:
    """A database outage is not a configuration error: `run` exits 1 (the unit restarts it
    until the server is back; RestartPreventExitStatus stops only 2 and 3), saying which
    server in one line, never the password."""
    config = pg_config(tmp_path, f"host={tmp_path} port=5432 user=co dbname=compliance")
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", "--config", str(config)],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PGPASSWORD": PASSWORD, "X_BEARER_TOKEN": TOKEN},
    )
    assert done.returncode == 1, done.stderr
    assert f"cannot connect to PostgreSQL (host={tmp_path} port=5432 dbname=compliance" \
        in done.stderr
    assert "service.store_unavailable" in done.stdout + done.stderr
    assert PASSWORD not in done.stdout + done.stderr
