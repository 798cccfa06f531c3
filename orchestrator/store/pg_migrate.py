"""Schema migrations of the PostgreSQL store, and its schema snapshot (store/schema_pg.sql).

migrations/postgresql/NNNN_description.sql, the same numbering as the SQLite files: 0005 is
the consolidated initial schema (see its header), later files are numbered as SQLite's and
produce the same schema version. The version lives in `schema_version` (PostgreSQL has no
user_version). Each file runs in one transaction with the version bump (DDL is transactional
on PostgreSQL), under an advisory lock, so two hosts starting at once migrate one after the
other and a failed file leaves the database where it was.

Regenerate the snapshot after adding a migration:  python -m orchestrator.store.pg_migrate DSN
"""

from __future__ import annotations

import argparse
from pathlib import Path

import anyio

from orchestrator.store.migrate import (
    Migration,
    MigrationError,
    SchemaTooNew,
    list_migrations,
    migrations_dir,
)
from orchestrator.store.postgresql import PgConnection, connect_pg
from orchestrator.store.schema import write_or_check

SCHEMA_FILE = Path(__file__).with_name("schema_pg.sql")
_LOCK_KEY = 0x636F6D70  # pg_advisory_xact_lock key: "comp"
FIRST_VERSION = 5  # migrations/postgresql/0005_initial.sql


def pg_migrations(directory: Path | None = None) -> list[Migration]:
    """The PostgreSQL migration files, from FIRST_VERSION up with no gap."""
    folder = directory if directory is not None else migrations_dir() / "postgresql"
    found = [m for m in list_migrations_from(folder)]
    for expected, migration in enumerate(found, start=FIRST_VERSION):
        if migration.version != expected:
            raise MigrationError(f"PostgreSQL migration {expected:04d} is missing in {folder}")
    return found


def list_migrations_from(folder: Path) -> list[Migration]:
    if not folder.is_dir():
        raise MigrationError(f"migrations folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix == ".sql")
    return [Migration(int(p.name[:4]), p) for p in files if p.name[:4].isdigit()]


async def schema_version(conn: PgConnection) -> int:
    async with conn.execute("SELECT to_regclass('schema_version') IS NOT NULL") as cursor:
        row = await cursor.fetchone()
    if not row[0]:
        return 0
    async with conn.execute("SELECT version FROM schema_version") as cursor:
        found = await cursor.fetchone()
    return 0 if found is None else int(found[0])


async def pending_pg_migrations(conn: PgConnection) -> list[int]:
    """Versions not applied yet (SchemaTooNew when the database is ahead of this program)."""
    head = list_migrations()[-1].version
    current = await schema_version(conn)
    if current > head:
        raise SchemaTooNew(f"database schema version {current} is newer than this program "
                           f"({head}); upgrade compliance-orchestrator or restore a backup")
    return [m.version for m in pg_migrations() if m.version > current]


async def apply_pg_migrations(conn: PgConnection, directory: Path | None = None) -> list[int]:
    """Bring the database up to date; the versions applied."""
    migrations = pg_migrations(directory)
    head = migrations[-1].version if migrations else 0
    if head != list_migrations()[-1].version:
        raise MigrationError(f"PostgreSQL migrations end at {head}; SQLite's at "
                             f"{list_migrations()[-1].version}: add the missing file")
    applied: list[int] = []
    await conn.execute("BEGIN")
    try:
        await conn.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK_KEY,))
        current = await schema_version(conn)
        if current > head:
            raise SchemaTooNew(f"database schema version {current} is newer than this program "
                               f"({head}); upgrade compliance-orchestrator or restore a backup")
        if current == 0:
            await conn.execute("CREATE TABLE schema_version (version BIGINT NOT NULL)")
            await conn.execute("INSERT INTO schema_version (version) VALUES (0)")
        for migration in migrations:
            if migration.version <= current:
                continue
            # One file = one simple-query script (psycopg sends a parameterless string so).
            await conn.raw.execute(migration.path.read_text(encoding="utf-8"))
            await conn.execute("UPDATE schema_version SET version = ?", (migration.version,))
            applied.append(migration.version)
    except BaseException:
        await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")
    return applied


_COLUMNS = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), co.collname
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
  LEFT JOIN pg_collation co ON co.oid = a.attcollation AND co.collname <> 'default'
 WHERE n.nspname = current_schema() AND c.relkind = 'r' AND a.attnum > 0
   AND NOT a.attisdropped
 ORDER BY c.relname, a.attnum
"""
_CONSTRAINTS = """
SELECT c.relname, k.conname, pg_get_constraintdef(k.oid) FROM pg_constraint k
  JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = current_schema() ORDER BY c.relname, k.conname
"""
_INDEXES = """
SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()
 ORDER BY indexname
"""


async def dump_pg_schema(conn: PgConnection) -> str:
    """Every table (columns, constraints) and index, from the catalogue, sorted by name."""
    version = await schema_version(conn)
    lines = [f"-- PostgreSQL schema after all migrations (schema_version {version}).",
             "-- Generated by `python -m orchestrator.store.pg_migrate`: do not edit by hand.",
             ""]
    async with conn.execute(_COLUMNS) as cursor:
        table = None
        for name, column, kind, not_null, default, collation in await cursor.fetchall():
            if name != table:
                lines += ["", f"-- table {name}"] if table else [f"-- table {name}"]
                table = name
            extra = f" COLLATE \"{collation}\"" if collation else ""
            extra += " NOT NULL" if not_null else ""
            extra += f" DEFAULT {default}" if default else ""
            lines.append(f"{name}.{column} {kind}{extra}")
    lines.append("")
    async with conn.execute(_CONSTRAINTS) as cursor:
        for name, constraint, definition in await cursor.fetchall():
            lines.append(f"-- constraint {name}.{constraint}: {definition}")
    lines.append("")
    async with conn.execute(_INDEXES) as cursor:
        for _name, definition in await cursor.fetchall():
            lines.append(f"{definition};")
    lines.append("")
    return "\n".join(lines)


async def migrated_pg_schema(dsn: str) -> str:
    conn = await connect_pg(dsn, None)
    try:
        await apply_pg_migrations(conn)
        return await dump_pg_schema(conn)
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.store.pg_migrate")
    parser.add_argument("dsn", help="an EMPTY scratch database, e.g. 'host=/tmp/pg dbname=x'")
    parser.add_argument("--check", action="store_true", help="exit 1 if schema_pg.sql is stale")
    args = parser.parse_args(argv)
    return write_or_check(SCHEMA_FILE, anyio.run(migrated_pg_schema, args.dsn),
                          check=args.check, command="python -m orchestrator.store.pg_migrate")


if __name__ == "__main__":
    raise SystemExit(main())
