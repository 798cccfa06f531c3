"""`migrate`, plus a smoke test of the installed console script."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from admin_helpers import db, offline_config, run_cli

from orchestrator.daemon.lock import StateLock
from orchestrator.logs import reset_logging
from orchestrator.store import migrate


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    reset_logging()


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


HEAD = len(migrate.list_migrations())  # the schema version this program ships
NEXT = HEAD + 1
NEXT_FILE = f"{NEXT:04d}_add_notes.sql"


@pytest.fixture
def next_migration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shipped migrations plus a new one, as the next release would bring."""
    folder = tmp_path / "migrations"
    shutil.copytree(migrate.migrations_dir(), folder)
    (folder / NEXT_FILE).write_text(
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL);\n"
    )
    monkeypatch.setattr(migrate, "migrations_dir", lambda: folder)
    return folder


def test_a_fresh_state_dir_gets_the_schema_then_is_up_to_date(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    run = run_cli(capsys, "migrate", "--config", config)
    assert run.code == 0, run.err
    assert f"created -> version {HEAD}" in run.out and "applied 0001_initial.sql" in run.out
    assert user_version(tmp_path / "state/state.db") == HEAD

    run = run_cli(capsys, "migrate", "--config", config)
    assert run.code == 0
    assert run.out.strip().endswith(f"up to date (schema version {HEAD})")
    run = run_cli(capsys, "migrate", "--config", config, "--json")
    assert run.json == {
        "ok": True, "state_db": str(tmp_path / "state/state.db"), "created": False,
        "from_version": HEAD, "to_version": HEAD, "applied": [], "backup": None,
        "status": "up to date",
    }


def test_pending_migrations_are_applied_after_a_backup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], next_migration: Path
) -> None:
    config = offline_config(tmp_path)
    db_path = tmp_path / "state/state.db"
    db_path.parent.mkdir()
    conn = sqlite3.connect(db_path)
    for shipped in migrate.list_migrations(next_migration)[:HEAD]:
        conn.executescript(shipped.path.read_text())
    conn.execute(f"PRAGMA user_version = {HEAD}")
    conn.execute("INSERT INTO events (at, kind) VALUES ('2026-01-01', 'kept')")
    conn.commit()
    conn.close()

    run = run_cli(capsys, "migrate", "--config", config, "--json")
    assert run.code == 0, run.err
    result = run.json
    assert result["status"] == "migrated"
    assert (result["from_version"], result["to_version"]) == (HEAD, NEXT)
    assert result["applied"] == [{"version": NEXT, "file": NEXT_FILE}]
    backup = Path(result["backup"])
    assert backup.parent == tmp_path / "state/backups"
    assert user_version(backup) == HEAD and user_version(db_path) == NEXT
    assert db(tmp_path, "SELECT kind FROM events") == [{"kind": "kept"}]

    # The other commands refuse a database that needs migrating, and say what to do.
    db(tmp_path, f"PRAGMA user_version = {HEAD}")
    run = run_cli(capsys, "retry", "1", "--config", config)
    assert run.code == 2 and f"needs migration(s) {NEXT}" in run.err and "migrate" in run.err


def test_refused_while_the_daemon_holds_the_state_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    with StateLock(tmp_path / "state"):  # exactly what `run` holds while it runs
        run = run_cli(capsys, "migrate", "--config", config, "--json")
    assert run.code == 2
    assert "refusing to migrate while the daemon runs" in run.json["error"]
    assert not (tmp_path / "state/state.db").exists()


def test_a_database_newer_than_the_program_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    assert run_cli(capsys, "migrate", "--config", config).code == 0
    db(tmp_path, "PRAGMA user_version = 7")
    run = run_cli(capsys, "migrate", "--config", config)
    assert run.code == 2
    assert f"schema version 7 is newer than this program ({HEAD})" in run.err
    assert user_version(tmp_path / "state/state.db") == 7


def test_a_failing_migration_leaves_the_database_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], next_migration: Path
) -> None:
    config = offline_config(tmp_path)
    (next_migration / NEXT_FILE).write_text("CREATE TABLE events (x);\n")
    run = run_cli(capsys, "migrate", "--config", config)  # the shipped ones apply, NEXT fails
    assert run.code == 1
    assert f"{NEXT_FILE} failed" in run.err and f"stays at version {HEAD}" in run.err
    assert user_version(tmp_path / "state/state.db") == HEAD


def test_console_script_smoke(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("compliance-orchestrator")
    if not script.exists():
        pytest.skip(f"console script not installed beside {sys.executable}")
    config = offline_config(tmp_path)

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(script), *argv, "--config", str(config)],
                              capture_output=True, text=True, timeout=60, check=False)

    migrated = run("migrate", "--json")
    assert migrated.returncode == 0, migrated.stderr
    assert json.loads(migrated.stdout)["applied"][0]["file"] == "0001_initial.sql"
    jobs = run("jobs", "--json")
    assert jobs.returncode == 0, jobs.stderr
    assert json.loads(jobs.stdout)["jobs"] == []
    missing = run("requeue", "nothing.txt")
    assert missing.returncode == 1 and missing.stdout == ""
    assert "nothing.txt: no such file" in missing.stderr
    usage = run("cancel", "not-a-number")
    assert usage.returncode == 2 and "invalid int value" in usage.stderr
