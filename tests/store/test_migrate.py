"""The user_version migration runner and the connection pragmas, on real SQLite files."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest
from migration_helpers import MIGRATIONS, first, make_dir

from orchestrator.errors import ConfigError
from orchestrator.store.migrate import (
    MigrationError,
    SchemaTooNew,
    apply_migrations,
    connect,
    list_migrations,
    migrations_dir,
    pending_migrations,
)

REPO = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())

@pytest.fixture
async def conn(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    connection = await connect(tmp_path / "state.db")
    yield connection
    await connection.close()


async def version(conn: aiosqlite.Connection) -> int:
    async with conn.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def schema(conn: aiosqlite.Connection) -> list[tuple[str, str]]:
    async with conn.execute(
        "SELECT name, sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY name"
    ) as cursor:
        return [(row[0], row[1]) for row in await cursor.fetchall()]


async def test_empty_database_to_head(tmp_path: Path, conn: aiosqlite.Connection) -> None:
    folder = make_dir(tmp_path, MIGRATIONS)
    assert await pending_migrations(conn, folder) == [1, 2, 3]
    assert await apply_migrations(conn, folder) == [1, 2, 3]
    assert await version(conn) == 3
    assert await pending_migrations(conn, folder) == []
    assert await apply_migrations(conn, folder) == []  # idempotent
    names = [name for name, _ in await schema(conn)]
    assert names == ["children", "events", "parents", "parents_logged"]
    assert not conn.in_transaction


@pytest.mark.parametrize("start", [0, 1, 2])
async def test_upgrade_from_every_older_version_matches_a_fresh_database(
    tmp_path: Path, start: int
) -> None:
    fresh = await connect(tmp_path / "fresh.db")
    try:
        await apply_migrations(fresh, make_dir(tmp_path, MIGRATIONS, "all"))
        expected = await schema(fresh)
    finally:
        await fresh.close()

    old = await connect(tmp_path / "old.db")
    try:
        await apply_migrations(old, make_dir(tmp_path, first(MIGRATIONS, start), "old"))
        assert await version(old) == start
        full = make_dir(tmp_path, MIGRATIONS, "new")
        assert await apply_migrations(old, full) == list(range(start + 1, 4))
        assert await schema(old) == expected
    finally:
        await old.close()


async def test_data_survives_an_upgrade_and_rebuild_does_not_cascade(
    tmp_path: Path, conn: aiosqlite.Connection
) -> None:
    await apply_migrations(conn, make_dir(tmp_path, first(MIGRATIONS, 2), "v2"))
    await conn.execute("INSERT INTO parents (id, name) VALUES (1, 'p')")
    await conn.execute("INSERT INTO children (parent_id) VALUES (1)")

    assert await apply_migrations(conn, make_dir(tmp_path, MIGRATIONS, "v3")) == [3]
    async with conn.execute("SELECT count(*) FROM children") as cursor:
        row = await cursor.fetchone()
    # DROP TABLE parents would have cascaded to children with foreign keys on.
    assert row is not None and row[0] == 1
    async with conn.execute("PRAGMA foreign_keys") as cursor:
        row = await cursor.fetchone()
    assert row is not None and row[0] == 1  # back on afterwards


async def test_broken_migration_leaves_the_version_unchanged(
    tmp_path: Path, conn: aiosqlite.Connection
) -> None:
    files = {
        **first(MIGRATIONS, 1),
        "0002_broken.sql": """
            CREATE TABLE half_done (id INTEGER);
            INSERT INTO no_such_table VALUES (1);
        """,
    }
    with pytest.raises(MigrationError) as info:
        await apply_migrations(conn, make_dir(tmp_path, files))
    message = str(info.value)
    assert "0002_broken.sql" in message
    assert "no_such_table" in message
    assert "stays at version 1" in message
    assert await version(conn) == 1  # 0001 committed, 0002 rolled back whole
    assert "half_done" not in [name for name, _ in await schema(conn)]
    assert not conn.in_transaction
    await conn.execute("INSERT INTO parents (name) VALUES ('still usable')")


async def test_foreign_key_violation_fails_the_migration(
    tmp_path: Path, conn: aiosqlite.Connection
) -> None:
    files = {
        **first(MIGRATIONS, 1),
        "0002_orphans.sql": "INSERT INTO children (parent_id) VALUES (42);",
    }
    with pytest.raises(MigrationError, match=r"0002_orphans\.sql .*foreign keys"):
        await apply_migrations(conn, make_dir(tmp_path, files))
    assert await version(conn) == 1


@pytest.mark.parametrize("statement", ["COMMIT;", "BEGIN;", "end transaction;", "ROLLBACK;"])
async def test_transaction_control_inside_a_file_is_refused(
    tmp_path: Path, conn: aiosqlite.Connection, statement: str
) -> None:
    files = {"0001_sneaky.sql": f"CREATE TABLE a (x);\n-- note\n{statement}\nCREATE TABLE b (y);"}
    with pytest.raises(MigrationError, match=r"0001_sneaky\.sql contains"):
        await apply_migrations(conn, make_dir(tmp_path, files))
    assert await version(conn) == 0
    assert await schema(conn) == []


async def test_newer_database_is_refused(tmp_path: Path, conn: aiosqlite.Connection) -> None:
    await conn.execute("PRAGMA user_version = 7")
    folder = make_dir(tmp_path, MIGRATIONS)
    with pytest.raises(SchemaTooNew) as info:
        await apply_migrations(conn, folder)
    assert isinstance(info.value, ConfigError)  # so `run` exits 2
    assert (
        "database schema version 7 is newer than this program (3); "
        "upgrade compliance-orchestrator or restore a backup"
    ) in str(info.value)
    assert str(tmp_path / "state.db") in str(info.value)
    with pytest.raises(SchemaTooNew):
        await pending_migrations(conn, folder)
    assert await version(conn) == 7


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["0001_a.sql", "0003_c.sql"], r"migration 0002 is missing .*next file is 0003_c\.sql"),
        (["0002_b.sql"], r"migration 0001 is missing"),
        (["0001_a.sql", "0001_b.sql"], r"two migrations produce version 1: 0001_a\.sql and 0001_b"),
        (["0001_a.sql", "2_b.sql"], r"bad migration file name .*2_b\.sql"),
        (["0001_Initial.sql"], r"bad migration file name"),
        (["0000_zero.sql"], r"bad migration file name"),
    ],
)
def test_bad_migration_folders(tmp_path: Path, names: list[str], message: str) -> None:
    folder = make_dir(tmp_path, dict.fromkeys(names, "SELECT 1;"))
    with pytest.raises(MigrationError, match=message):
        list_migrations(folder)


def test_other_files_are_ignored(tmp_path: Path) -> None:
    folder = make_dir(
        tmp_path, {"0001_a.sql": "", "README.md": "", ".0002_hidden.sql": "", "notes.txt": ""}
    )
    assert [m.version for m in list_migrations(folder)] == [1]


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="migrations folder not found"):
        list_migrations(tmp_path / "nope")


async def test_backup_is_taken_before_upgrading_a_database_with_data(
    tmp_path: Path, conn: aiosqlite.Connection
) -> None:
    backup = tmp_path / "backup.db"
    await apply_migrations(conn, make_dir(tmp_path, first(MIGRATIONS, 1), "v1"), backup_path=backup)
    assert not backup.exists()  # nothing worth saving in an empty database
    await conn.execute("INSERT INTO parents (name) VALUES ('precious')")

    backup.write_bytes(b"an older backup")  # replaced, not refused
    await apply_migrations(conn, make_dir(tmp_path, MIGRATIONS, "v3"), backup_path=backup)
    assert await version(conn) == 3
    with sqlite3.connect(backup) as copy:
        assert copy.execute("PRAGMA user_version").fetchone() == (1,)
        assert copy.execute("SELECT name FROM parents").fetchall() == [("precious",)]
    assert not (tmp_path / "backup.db.tmp").exists()


async def test_no_backup_when_nothing_is_pending(
    tmp_path: Path, conn: aiosqlite.Connection
) -> None:
    folder = make_dir(tmp_path, MIGRATIONS)
    await apply_migrations(conn, folder)
    await apply_migrations(conn, folder, backup_path=tmp_path / "backup.db")
    assert not (tmp_path / "backup.db").exists()


async def test_connect_sets_the_pragmas(conn: aiosqlite.Connection) -> None:
    pragmas = {}
    for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout"):
        async with conn.execute(f"PRAGMA {name}") as cursor:
            row = await cursor.fetchone()
        assert row is not None
        pragmas[name] = row[0]
    assert pragmas == {
        "journal_mode": "wal",
        "synchronous": 2,
        "foreign_keys": 1,
        "busy_timeout": 5000,
    }
    await conn.execute("CREATE TABLE t (x INTEGER)")
    await conn.execute("INSERT INTO t VALUES (5)")
    assert not conn.in_transaction  # autocommit: writers use explicit BEGIN IMMEDIATE
    async with conn.execute("SELECT x FROM t") as cursor:
        row = await cursor.fetchone()
    assert row is not None and row["x"] == 5


def test_migrations_dir_finds_the_shipped_schema() -> None:
    folder = migrations_dir()
    assert folder.is_dir()
    # In a source checkout / editable install it is the repository's top-level folder.
    if not (REPO / "orchestrator" / "migrations").is_dir():
        assert folder == REPO / "migrations"


async def test_the_real_migrations_apply_to_an_empty_database(
    tmp_path: Path, conn: aiosqlite.Connection
) -> None:
    files = sorted((REPO / "migrations").glob("*.sql"))
    if not files:
        pytest.skip("no migrations written yet")
    applied = await apply_migrations(conn, REPO / "migrations")
    assert applied == list(range(1, len(files) + 1))
    assert await version(conn) == len(files)
    async with conn.execute("PRAGMA foreign_key_check") as cursor:
        assert await cursor.fetchall() == []
    async with conn.execute("PRAGMA integrity_check") as cursor:
        assert [tuple(row) for row in await cursor.fetchall()] == [("ok",)]
