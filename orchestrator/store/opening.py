"""Open the configured store: `[store] backend` picks the engine (the composition root and
the command-line tools call this, never an engine's opener directly).

sqlite: <state_dir>/state.db, migrated (with a backup first). postgresql: `store.dsn` with the
password read like the bearer token (credentials.load_db_password; never in the config, never
logged). Result splitting (store/scratch.py) stays a local SQLite file on both: it is
per-process scratch, deleted when the batch is split, and never shared between hosts.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping

from orchestrator.clock import Clock
from orchestrator.config import Config
from orchestrator.credentials import load_db_password
from orchestrator.layout import Layout
from orchestrator.store.sqlite import Store


def _database_errors() -> tuple[type[Exception], ...]:
    try:
        from psycopg import Error
    except ImportError:  # pragma: no cover - without the optional extra
        return (sqlite3.Error,)
    return (sqlite3.Error, Error)


# What either engine raises when the database is busy, gone or refuses a statement.
DATABASE_ERRORS = _database_errors()


async def open_configured_store(
    config: Config, layout: Layout, clock: Clock, *, host_id: str | None = None,
    migrate: bool = True, environ: Mapping[str, str] = os.environ,
) -> Store:
    """The store of `config`, brought up to date (`migrate`), else refused while a migration
    is pending (pg: MigrationError naming the versions)."""
    if config.store.backend == "postgresql":
        from orchestrator.store.postgresql import PostgresStore

        return await PostgresStore.open_pg(
            config.store.dsn, clock, password=load_db_password(config.store, environ),
            host_id=host_id, migrate=migrate,
        )
    return await Store.open(layout.db_path, clock, backup_dir=layout.backups, host_id=host_id)
