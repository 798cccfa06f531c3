"""`backup`: a consistent copy of the state database while the daemon may be running.

SQLite's online backup API, in one step: that is one read transaction, which under WAL does
not block the daemon's writes (copying in several steps would restart whenever the daemon
wrote in between, possibly forever on a busy one). The copy is written under a temp name,
fsynced and renamed, 0600 from its creation: it holds the same signed URLs as state.db.
"""

from __future__ import annotations

import os
import sqlite3
from datetime import datetime
from pathlib import Path

from orchestrator.store.migrate import DB_FILE_MODE


def backup_name(now: datetime) -> str:
    return f"state-{now.strftime('%Y%m%dT%H%M%SZ')}.db"


def backup_database(db_path: Path, to_dir: Path, now: datetime) -> Path:
    """Copy `db_path` into `to_dir` (made 0700 if missing) as state-<UTC time>.db."""
    if not db_path.is_file():
        raise FileNotFoundError(f"no state database at {db_path}")
    to_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = to_dir / backup_name(now)
    if target.exists():
        raise FileExistsError(f"{target} already exists")
    tmp = target.with_name(target.name + ".tmp")
    tmp.unlink(missing_ok=True)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, DB_FILE_MODE))
    source = sqlite3.connect(f"{db_path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        dest = sqlite3.connect(tmp)
        try:
            source.backup(dest)  # pages=-1: all in one step
            dest.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        finally:
            dest.close()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        source.close()
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(target)
    dir_fd = os.open(to_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target
