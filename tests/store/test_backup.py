"""store.backup: a consistent 0600 copy of a database another connection keeps writing."""

from __future__ import annotations

import sqlite3
import stat
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator.store.backup import backup_database

NOW = datetime(2026, 12, 2, 4, 5, 6, tzinfo=UTC)


def wal_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, pad TEXT)")
    return conn


def test_copy_is_private_self_contained_and_named_by_time(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    conn = wal_db(db)
    conn.executemany("INSERT INTO t (pad) VALUES (?)", [("x" * 100,)] * 500)  # in the WAL
    target = backup_database(db, tmp_path / "backups", NOW)
    assert target == tmp_path / "backups" / "state-20261202T040506Z.db"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    conn.close()
    copy = sqlite3.connect(target)
    assert copy.execute("SELECT count(*) FROM t").fetchone() == (500,)
    assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    copy.close()
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


def test_a_writer_keeps_writing_and_the_copy_is_a_consistent_snapshot(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    conn = wal_db(db)
    conn.executemany("INSERT INTO t (pad) VALUES (?)", [("y" * 2000,)] * 3000)
    stop = threading.Event()
    written = []

    def writer() -> None:
        while not stop.is_set():
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (pad) VALUES ('a')")
            conn.execute("INSERT INTO t (pad) VALUES ('b')")  # pairs: a torn copy shows odd
            conn.execute("COMMIT")
            written.append(1)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        target = backup_database(db, tmp_path / "b", NOW)
    finally:
        stop.set()
        thread.join()
    assert written, "the writer was never let through"
    copy = sqlite3.connect(target)
    (count,) = copy.execute("SELECT count(*) FROM t").fetchone()
    assert count >= 3000 and (count - 3000) % 2 == 0
    copy.close()
    conn.close()


def test_refuses_a_missing_database_and_an_existing_target(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        backup_database(tmp_path / "none.db", tmp_path / "b", NOW)
    db = tmp_path / "state.db"
    wal_db(db).close()
    backup_database(db, tmp_path / "b", NOW)
    with pytest.raises(FileExistsError):
        backup_database(db, tmp_path / "b", NOW)
