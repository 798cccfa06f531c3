"""A damaged state.db (issue 10, item 12): one clear message naming the file, the newest
backup and how to restore, and an exit status that systemd does not restart (no traceback,
no restart loop)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from daemon_helpers import TOKEN, write_config

from orchestrator.errors import ExitCode

REPO = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
UNIT = REPO / "deploy" / "compliance-orchestrator.service"
INSTALL = REPO / "deploy" / "INSTALL.md"


def _run(config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "X_BEARER_TOKEN": TOKEN}
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM",
                 "CREDENTIALS_DIRECTORY"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", "--config", str(config)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )


def _garbage(db: Path) -> None:
    db.write_bytes(os.urandom(8192))


def _truncated(db: Path) -> None:
    # A real database with enough rows to span many pages, cut in the middle.
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("CREATE INDEX t_body ON t (body)")
        conn.executemany("INSERT INTO t (body) VALUES (?)", [(f"{i:08d}" * 20,) for i in
                                                             range(3000)])
        conn.execute("PRAGMA user_version = 1")
    conn.close()
    size = db.stat().st_size
    os.truncate(db, size // 2)


@pytest.mark.parametrize("damage", [_garbage, _truncated], ids=["garbage", "truncated"])
@pytest.mark.parametrize("with_backup", [False, True], ids=["no-backup", "backup"])
def test_a_corrupt_state_db_exits_3_with_one_clear_message(
    tmp_path: Path, damage: object, with_backup: bool
) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9")  # never reached
    state = tmp_path / "state"
    state.mkdir()
    db = state / "state.db"
    assert callable(damage)
    damage(db)
    backup = None
    if with_backup:
        (state / "backups").mkdir()
        older = state / "backups" / "state-before-migration-20250101T000000Z.db"
        older.write_bytes(b"old")
        os.utime(older, (1_700_000_000, 1_700_000_000))
        backup = state / "backups" / "state-before-migration-20260101T000000Z.db"
        backup.write_bytes(b"newer")

    done = _run(config)

    assert done.returncode == ExitCode.STATE_CORRUPT == 3
    output = done.stdout + done.stderr
    assert "Traceback" not in output and '"exception"' not in output
    message = done.stderr.strip().splitlines()
    assert len(message) == 1, done.stderr
    text = message[0]
    assert str(db) in text and "corrupt" in text
    assert "Restoring the state database" in text and "INSTALL.md" in text
    if backup is not None:
        assert str(backup) in text and "copy the backup" in text
    else:
        assert "no backup" in text
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    final = [e for e in events if e["event"] == "service.state_corrupt"]
    assert len(final) == 1 and final[0]["level"] == "error"
    assert final[0]["file"] == str(db)
    assert final[0]["backup"] == (str(backup) if backup else None)
    assert not any(e["event"] == "service.crashed" for e in events)
    # The damaged file is left as it was for the operator (or a recovery tool).
    assert db.exists()


def test_the_unit_does_not_restart_on_a_corrupt_database() -> None:
    lines = [line.strip() for line in UNIT.read_text().splitlines()]
    prevent = [line for line in lines if line.startswith("RestartPreventExitStatus=")]
    assert len(prevent) == 1
    codes = prevent[0].partition("=")[2].split()
    assert str(int(ExitCode.STATE_CORRUPT)) in codes and str(int(ExitCode.USAGE)) in codes


def test_install_md_has_the_restore_section_the_message_points_at() -> None:
    text = INSTALL.read_text()
    assert "## Restoring the state database" in text
    section = text.split("## Restoring the state database", 1)[1].split("\n## ", 1)[0]
    assert "systemctl stop" in section and "backups/" in section and "state.db-wal" in section
