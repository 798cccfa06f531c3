"""`backup --to DIR`: a consistent, private copy of the state database; works while the
daemon runs (SQLite's online backup API, see store/backup.py). Prints the file's path.

On PostgreSQL the state is the operator's database, backed up with the database's own tools:
the command does nothing and says how (pg_dump), exit 2."""

from __future__ import annotations

import argparse

from orchestrator.cli.common import EXIT_USAGE, AdminError, Outcome, layout_from_args, run_admin
from orchestrator.clock import SystemClock
from orchestrator.store.backup import backup_database


def _backup(args: argparse.Namespace) -> Outcome:
    layout = layout_from_args(args)
    if layout.store is not None and layout.store.backend == "postgresql":
        raise AdminError(
            "the state is in PostgreSQL (store.backend): back it up with the database's tools, "
            "e.g. `pg_dump --format=custom --file=compliance.dump \"<store.dsn>\"` (a "
            "consistent snapshot while the daemons run), or your base backups + WAL archive; "
            "see deploy/INSTALL.md",
            EXIT_USAGE,
        )
    if not layout.db_path.is_file():
        raise AdminError(f"no state database at {layout.db_path}: the daemon has not run here yet")
    try:
        path = backup_database(layout.db_path, args.to, SystemClock().now())
    except FileExistsError as error:
        raise AdminError(f"{error}; try again in a second") from None
    size = path.stat().st_size
    return {"path": str(path), "bytes": size}, str(path)


def backup_command(args: argparse.Namespace) -> int:
    return run_admin(args, _backup)
