"""`backup --to DIR`: a consistent, private copy of the state database; works while the
daemon runs (SQLite's online backup API, see store/backup.py). Prints the file's path."""

from __future__ import annotations

import argparse

from orchestrator.cli.common import AdminError, Outcome, layout_from_args, run_admin
from orchestrator.clock import SystemClock
from orchestrator.store.backup import backup_database


def _backup(args: argparse.Namespace) -> Outcome:
    layout = layout_from_args(args)
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
