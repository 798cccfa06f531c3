"""`migrate`: apply pending schema migrations to the state database, and report them.

Only with the daemon stopped: we take the state directory's lock (the one `run` holds) for
the whole operation, so a running daemon is refused (exit 2) and a daemon starting meanwhile
waits for us by failing to start rather than reading a half-changed schema. A database that
already holds data is first copied with VACUUM INTO to `<state_dir>/backups/`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import anyio

from orchestrator.cli.common import (
    AdminError,
    Outcome,
    layout_from_args,
    run_admin,
)
from orchestrator.clock import SystemClock
from orchestrator.daemon.lock import AlreadyRunning, StateLock, lock_file_name
from orchestrator.errors import ExitCode
from orchestrator.layout import Layout
from orchestrator.store.migrate import (
    apply_migrations,
    connect,
    list_migrations,
    pending_migrations,
    user_version,
)


async def migrate_postgresql(layout: Layout) -> dict[str, Any]:
    """[store] backend = "postgresql": migrations/postgresql/ on store.dsn (run it with the
    schema owner's DSN where the daemons' role may not create tables, deploy/CLUSTER.md).
    The runner's advisory lock makes daemons starting meanwhile wait; back the database up
    with pg_dump first."""
    from orchestrator.credentials import load_db_password
    from orchestrator.store.pg_migrate import apply_pg_migrations, pg_migrations, schema_version
    from orchestrator.store.postgresql import connect_pg

    assert layout.store is not None
    files = {m.version: m.path.name for m in pg_migrations()}
    conn = await connect_pg(layout.store.dsn, load_db_password(layout.store))
    try:
        before = await schema_version(conn)
        applied = await apply_pg_migrations(conn)
        after = await schema_version(conn)
    finally:
        await conn.close()
    return {
        "state_db": "postgresql (store.dsn)", "created": before == 0, "from_version": before,
        "to_version": after, "applied": [{"version": v, "file": files[v]} for v in applied],
        "backup": None, "status": "migrated" if applied else "up to date",
    }


async def migrate_database(layout: Layout) -> dict[str, Any]:
    """Apply what is pending; the caller holds the state lock. SchemaTooNew passes through."""
    if layout.store is not None and layout.store.backend == "postgresql":
        return await migrate_postgresql(layout)
    files = {m.version: m.path.name for m in list_migrations()}
    existed = layout.db_path.exists()
    conn = await connect(layout.db_path)
    try:
        before = await user_version(conn)
        pending = await pending_migrations(conn)
        backup: Path | None = None
        if pending:
            layout.backups.mkdir(parents=True, exist_ok=True)
            stamp = SystemClock().now().strftime("%Y%m%dT%H%M%SZ")
            backup = layout.backups / f"state-before-migration-{stamp}.db"
        applied = await apply_migrations(conn, backup_path=backup) if pending else []
        after = await user_version(conn)
    finally:
        await conn.close()
    return {
        "state_db": str(layout.db_path),
        "created": not existed,
        "from_version": before,
        "to_version": after,
        "applied": [{"version": v, "file": files[v]} for v in applied],
        "backup": str(backup) if backup is not None and backup.exists() else None,
        "status": "migrated" if applied else "up to date",
    }


def render(result: dict[str, Any]) -> str:
    if not result["applied"]:
        return f"{result['state_db']}: up to date (schema version {result['to_version']})"
    head = "created" if result["created"] else f"schema version {result['from_version']}"
    lines = [f"{result['state_db']}: {head} -> version {result['to_version']}"]
    lines += [f"  applied {item['file']}" for item in result["applied"]]
    if result["backup"]:
        lines.append(f"  backup of the previous database: {result['backup']}")
    return "\n".join(lines)


def _migrate(args: argparse.Namespace) -> Outcome:
    layout = layout_from_args(args)
    # This host's daemon lock (per host on a shared store): a daemon running here refuses.
    lock = StateLock(layout.state_dir, lock_file_name(layout.host_id))
    try:
        lock.acquire()
    except AlreadyRunning as error:
        # A running daemon has its schema in use; it applies pending migrations itself at
        # start, so "stop, upgrade, start" needs no separate step at all.
        raise AdminError(
            f"refusing to migrate while the daemon runs: {error.message}. Note that `run` "
            "applies pending migrations itself when it starts", ExitCode.USAGE,
        ) from None
    try:
        result = anyio.run(migrate_database, layout)
    finally:
        lock.release()
    return result, render(result)


def migrate_command(args: argparse.Namespace) -> int:
    return run_admin(args, _migrate)
