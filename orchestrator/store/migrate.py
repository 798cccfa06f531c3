"""Schema migrations under `PRAGMA user_version`, and the connection set-up of the state DB.

`migrations/NNNN_description.sql`: the four digits are the user_version the file produces.
Files are forward-only and never edited once released. Each file runs in one transaction
together with the version bump, so a database is always exactly at some version: a failed or
interrupted migration leaves it where it was.
"""

from __future__ import annotations

import importlib.resources
import os
import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite
import structlog

from orchestrator.clock import Clock, SystemClock
from orchestrator.errors import ConfigError, OrchestratorError

log = structlog.get_logger(__name__)

_FILE_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
_LEADING_COMMENTS = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
_TRANSACTION_WORDS = frozenset({"BEGIN", "COMMIT", "END", "ROLLBACK"})
BUSY_TIMEOUT_MS = 5000
# state.db holds the jobs' signed upload/download URLs (valid for days): owner only, whatever
# the umask. SQLite gives the -wal and -shm files the mode of the database file.
DB_FILE_MODE = 0o600
BACKUP_DIR_NAME = "backups"  # <state_dir>/backups, next to state.db
RESTORE_DOC = "deploy/INSTALL.md, section 'Restoring the state database'"


class MigrationError(OrchestratorError):
    """The database schema could not be brought up to date."""


class SchemaTooNew(ConfigError):
    """The database was written by a newer version of this program."""


class CorruptDatabase(OrchestratorError):
    """The state database is damaged or not an SQLite database at all.

    Restarting cannot fix it, so the daemon exits with ExitCode.STATE_CORRUPT, which the unit
    lists in RestartPreventExitStatus=. The message says which backup to restore and how.
    """

    def __init__(self, db_path: Path, cause: str) -> None:
        self.db_path = db_path
        self.backup = newest_backup(db_path)
        self.cause = cause
        super().__init__(_corrupt_message(db_path, cause, self.backup))


def _is_corruption(error: sqlite3.Error) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
    text = str(error)
    return "file is not a database" in text or "malformed" in text


def newest_backup(db_path: Path) -> Path | None:
    """The most recent `<state_dir>/backups/*.db` (by modification time), if any."""
    folder = db_path.parent / BACKUP_DIR_NAME
    try:
        found = [(p.stat().st_mtime, p) for p in folder.glob("*.db") if p.is_file()]
    except OSError:
        return None
    return max(found)[1] if found else None


def _corrupt_message(db_path: Path, cause: str, backup: Path | None) -> str:
    side = ", ".join(f"{db_path.name}{suffix}" for suffix in ("", "-wal", "-shm"))
    head = (
        f"the state database {db_path} is corrupt ({cause}); the daemon does not start on it "
        "(restarting will not help)."
    )
    if backup is None:
        return (
            f"{head} There is no backup in {db_path.parent / BACKUP_DIR_NAME}. To start afresh, "
            f"stop the service and move {side} out of {db_path.parent}; inputs already claimed "
            f"stay in the spool for an operator. See {RESTORE_DOC}."
        )
    taken = datetime.fromtimestamp(backup.stat().st_mtime, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{head} Newest backup: {backup} (written {taken}). To restore: stop the service, move "
        f"{side} out of {db_path.parent}, copy the backup to {db_path}, start the service. "
        f"See {RESTORE_DOC}."
    )


async def _main_file(conn: aiosqlite.Connection) -> Path | None:
    async with conn.execute("PRAGMA database_list") as cursor:
        files = [row[2] for row in await cursor.fetchall() if row[1] == "main" and row[2]]
    return Path(files[0]) if files else None


async def check_integrity(conn: aiosqlite.Connection) -> None:
    """Raise CorruptDatabase unless `PRAGMA quick_check` passes (a truncated or overwritten
    file often opens fine and fails only when a damaged page is read, mid-run)."""
    try:
        async with conn.execute("PRAGMA quick_check(5)") as cursor:
            problems = [str(row[0]) for row in await cursor.fetchall()]
    except sqlite3.DatabaseError as error:
        if not _is_corruption(error):
            raise
        problems = [str(error)]
    if problems == ["ok"]:
        return
    where = await _main_file(conn)
    raise CorruptDatabase(where or Path(":memory:"), "; ".join(problems)[:300])


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    path: Path


def migrations_dir() -> Path:
    """The migrations shipped in the wheel (`orchestrator/migrations`, force-included by hatch),
    else the repository's top-level `migrations/` (editable installs, a source checkout)."""
    shipped = importlib.resources.files("orchestrator") / "migrations"
    if shipped.is_dir():
        return Path(str(shipped))
    return Path(__file__).resolve().parents[2] / "migrations"


def _statements(script: str) -> list[str]:
    """Split a script into complete statements (trigger bodies and quoted ';' included)."""
    statements: list[str] = []
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            statements.append(buffer)
            buffer = ""
    return statements


def _check_no_transaction_control(migration: Migration, script: str) -> None:
    # The runner wraps each file in one transaction; a COMMIT inside would split it and could
    # leave a half-applied schema behind a bumped user_version.
    for statement in _statements(script):
        comments = _LEADING_COMMENTS.match(statement)
        body = statement[comments.end() :] if comments else statement
        first = re.match(r"[A-Za-z]+", body)
        if first and first.group(0).upper() in _TRANSACTION_WORDS:
            raise MigrationError(
                f"migration {migration.path.name} contains {first.group(0).upper()}; files must "
                "not control transactions (the runner wraps each file in one)"
            )


def list_migrations(directory: Path | None = None) -> list[Migration]:
    """The migration files in version order; raise MigrationError on a bad name, gap or
    duplicate. Other files (README, dotfiles) are ignored."""
    directory = directory if directory is not None else migrations_dir()
    if not directory.is_dir():
        raise MigrationError(f"migrations folder not found: {directory}")
    found: dict[int, Path] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql" or path.name.startswith("."):
            continue
        match = _FILE_NAME.fullmatch(path.name)
        if not match or int(match.group(1)) == 0:
            raise MigrationError(
                f"bad migration file name {path}: expected NNNN_description.sql with NNNN "
                "from 0001 and a lower-case snake_case description"
            )
        version = int(match.group(1))
        if version in found:
            raise MigrationError(
                f"two migrations produce version {version}: {found[version].name} and {path.name}"
            )
        found[version] = path
    migrations = [Migration(v, found[v]) for v in sorted(found)]
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise MigrationError(
                f"migration {expected:04d} is missing in {directory} "
                f"(the next file is {migration.path.name})"
            )
    return migrations


async def _scalar(conn: aiosqlite.Connection, sql: str) -> object:
    async with conn.execute(sql) as cursor:
        row = await cursor.fetchone()
    return row[0] if row is not None else None


async def user_version(conn: aiosqlite.Connection) -> int:
    """The schema version the database is at (0: empty)."""
    value = await _scalar(conn, "PRAGMA user_version")
    return value if isinstance(value, int) else 0


async def _check_not_too_new(conn: aiosqlite.Connection, current: int, head: int) -> None:
    if current > head:
        async with conn.execute("PRAGMA database_list") as cursor:
            files = [row[2] for row in await cursor.fetchall() if row[1] == "main" and row[2]]
        where = f"{files[0]}: " if files else ""
        raise SchemaTooNew(
            f"{where}database schema version {current} is newer than this program ({head}); "
            "upgrade compliance-orchestrator or restore a backup"
        )


async def pending_migrations(
    conn: aiosqlite.Connection, directory: Path | None = None
) -> list[int]:
    """Versions not yet applied. Raises SchemaTooNew like apply_migrations."""
    migrations = list_migrations(directory)
    current = await user_version(conn)
    await _check_not_too_new(conn, current, migrations[-1].version if migrations else 0)
    return [m.version for m in migrations if m.version > current]


async def _backup(conn: aiosqlite.Connection, backup_path: Path) -> None:
    """A consistent copy of the database, written to a temp name, fsynced, then renamed."""
    tmp = backup_path.with_name(backup_path.name + ".tmp")
    tmp.unlink(missing_ok=True)  # VACUUM INTO refuses to overwrite
    await conn.execute("VACUUM INTO ?", (str(tmp),))
    tmp.chmod(DB_FILE_MODE)  # a copy of the signed URLs: as private as state.db
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(backup_path)
    dir_fd = os.open(backup_path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    log.info("migrate.backup_written", file=str(backup_path))


async def _apply_one(conn: aiosqlite.Connection, migration: Migration, current: int) -> None:
    script = migration.path.read_text(encoding="utf-8")
    _check_no_transaction_control(migration, script)
    # Foreign keys off while the schema changes, as SQLite's table-rebuild procedure requires
    # (otherwise dropping a rebuilt parent table cascades); checked before commit instead.
    fk_enabled = await _scalar(conn, "PRAGMA foreign_keys")
    await conn.execute("PRAGMA foreign_keys = OFF")
    try:
        # executescript ignores isolation_level, so the transaction is part of the script.
        await conn.executescript(
            f"BEGIN IMMEDIATE;\n{script}\n;\nPRAGMA user_version = {migration.version};\n"
        )
        async with conn.execute("PRAGMA foreign_key_check") as cursor:
            violations = list(await cursor.fetchall())
        if violations:
            raise MigrationError(
                f"migration {migration.path.name} failed: it leaves {len(violations)} rows "
                f"violating foreign keys (first in table {violations[0][0]}); the database "
                f"stays at version {current}"
            )
        await conn.execute("COMMIT")
    except sqlite3.Error as exc:
        await _rollback(conn)
        raise MigrationError(
            f"migration {migration.path.name} failed: {exc}; the database stays at version "
            f"{current}"
        ) from exc
    except BaseException:
        await _rollback(conn)
        raise
    finally:
        if fk_enabled:
            await conn.execute("PRAGMA foreign_keys = ON")


async def _rollback(conn: aiosqlite.Connection) -> None:
    if conn.in_transaction:
        await conn.execute("ROLLBACK")


async def apply_migrations(
    conn: aiosqlite.Connection,
    directory: Path | None = None,
    *,
    backup_path: Path | None = None,
    clock: Clock | None = None,
) -> list[int]:
    """Apply pending migrations in order; return the versions applied.

    Before changing a database that already holds data, copy it to `backup_path` (if given).
    Raises SchemaTooNew for a database newer than the newest file, MigrationError (naming the
    file; the database stays at the last good version) when a file fails.
    """
    migrations = list_migrations(directory)
    head = migrations[-1].version if migrations else 0
    await check_integrity(conn)
    current = await user_version(conn)
    await _check_not_too_new(conn, current, head)
    pending = [m for m in migrations if m.version > current]
    if not pending:
        return []
    if backup_path is not None and (
        current > 0 or await _scalar(conn, "SELECT count(*) FROM sqlite_schema")
    ):
        await _backup(conn, backup_path)
    clock = clock or SystemClock()
    applied: list[int] = []
    for migration in pending:
        started = clock.monotonic()
        await _apply_one(conn, migration, current)
        current = migration.version
        applied.append(current)
        log.info(
            "migrate.applied",
            version=current,
            file=migration.path.name,
            duration_ms=round((clock.monotonic() - started) * 1000),
        )
    return applied


async def connect(db_path: Path) -> aiosqlite.Connection:
    """Open the state database with the pragmas every connection needs: autocommit (writers
    use explicit BEGIN IMMEDIATE), WAL, synchronous=FULL, foreign keys, a busy timeout and
    rows addressable by column name.

    A new database file is created 0600 (SQLite would follow the umask); one that is not an
    SQLite database raises CorruptDatabase."""
    _private_db_file(db_path)
    conn = await aiosqlite.connect(db_path, isolation_level=None)
    try:
        conn.row_factory = aiosqlite.Row
        # First, so that switching to WAL waits for another process's lock instead of failing.
        await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = await _scalar(conn, "PRAGMA journal_mode = WAL")
        if str(mode).lower() != "wal":
            # Still durable, but readers (status) block the writer; usually a network FS.
            log.warning("store.wal_unavailable", journal_mode=mode, file=str(db_path))
        await conn.execute("PRAGMA synchronous = FULL")
        await conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as error:
        await conn.close()
        if _is_corruption(error):
            raise CorruptDatabase(Path(db_path), str(error)) from None
        raise
    except BaseException:
        await conn.close()
        raise
    return conn


def _private_db_file(db_path: Path) -> None:
    """Create the database file 0600, or take group/other access away from one made by an
    older version under a loose umask (with its -wal and -shm)."""
    if str(db_path) == ":memory:":
        return
    try:
        fd = os.open(db_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, DB_FILE_MODE)
    except FileExistsError:
        for path in (Path(db_path), *(Path(f"{db_path}{s}") for s in ("-wal", "-shm"))):
            try:
                if path.stat().st_mode & 0o077:
                    path.chmod(DB_FILE_MODE)
            except OSError:
                continue  # missing, or not ours (a reader's `status`): leave it alone
        return
    except OSError:
        return  # no such folder, read-only: SQLite's own error says it
    os.close(fd)
