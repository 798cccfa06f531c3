"""PostgreSQL schema snapshot: migrations/postgresql produce exactly store/schema_pg.sql, and
the same tables and columns as the SQLite migrations (one write model needs one schema)."""

from __future__ import annotations

import re

import aiosqlite

from orchestrator.store.migrate import apply_migrations, list_migrations
from orchestrator.store.pg_migrate import (
    SCHEMA_FILE,
    apply_pg_migrations,
    dump_pg_schema,
    pg_migrations,
    schema_version,
)
from orchestrator.store.postgresql import connect_pg

REGENERATE = "python -m orchestrator.store.pg_migrate 'host=... dbname=<empty database>'"


async def test_pg_migrations_produce_the_checked_in_schema(pg_dsn: str) -> None:
    conn = await connect_pg(pg_dsn, None)
    try:
        text = await dump_pg_schema(conn)
    finally:
        await conn.close()
    assert text == SCHEMA_FILE.read_text(encoding="utf-8"), (
        f"the migrated schema differs from {SCHEMA_FILE.name}: if the change is intended, "
        f"run `{REGENERATE}` and review the diff")


async def test_both_engines_have_the_same_tables_and_columns() -> None:
    async with aiosqlite.connect(":memory:", isolation_level=None) as conn:
        await apply_migrations(conn)
        async with conn.execute(
            "SELECT m.name, p.name FROM sqlite_schema m, pragma_table_info(m.name) p"
            " WHERE m.type = 'table'"
        ) as cursor:
            sqlite_columns = {f"{t}.{c}" for t, c in await cursor.fetchall()}
    text = SCHEMA_FILE.read_text(encoding="utf-8")
    pg_columns = set(re.findall(r"^([a-z_]+\.[a-z_0-9]+) ", text, re.MULTILINE))
    pg_columns -= {"schema_version.version"}  # PostgreSQL's stand-in for user_version
    assert pg_columns == sqlite_columns


def test_pg_migrations_end_at_the_sqlite_version() -> None:
    assert pg_migrations()[-1].version == list_migrations()[-1].version


async def test_migrating_twice_changes_nothing(pg_dsn: str) -> None:
    conn = await connect_pg(pg_dsn, None)
    try:
        assert await apply_pg_migrations(conn) == []
        assert await schema_version(conn) == list_migrations()[-1].version
    finally:
        await conn.close()
