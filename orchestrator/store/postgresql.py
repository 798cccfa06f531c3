"""PostgreSQL engine of the store (`[store] backend = "postgresql"`): psycopg 3, async.

The write model is sqlite.Store's, unchanged (ONE write model); this module supplies only what
differs per engine: a connection adapter that speaks the store's SQL (`?` placeholders, rows
addressable by name and position, `async with conn.execute(...)`), the transaction's BEGIN,
NULL-safe comparison, row locks, timestamptz lease times from the server's clock, and the
migrations of migrations/postgresql/ (pg_migrate.py).

Transactions. One connection per store, in autocommit mode, with explicit BEGIN ... COMMIT
under the store's write lock: inside one process the writes take turns exactly as on SQLite.
Between processes (several hosts) the isolation is READ COMMITTED with row locks, not
SERIALIZABLE with retries: every transition is a compare-and-set `UPDATE ... WHERE id = ? AND
state = ?`, and PostgreSQL re-evaluates that WHERE on the newest row version after waiting for
a concurrent writer's lock, so of two racing transitions one changes the row and the other
changes nothing (StaleState), as on SQLite; the few read-then-write checks (record_events'
batch state, a setting's `since`, mark_delivered's batch) read with `FOR UPDATE`. So no
transaction can fail with a serialisation error, and none needs a retry loop.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

from orchestrator.clock import Clock
from orchestrator.errors import ConfigError
from orchestrator.redact import redact_text
from orchestrator.store.migrate import MigrationError
from orchestrator.store.sqlite import Store

try:  # the optional extra: pip install 'compliance-orchestrator[postgresql]'
    import psycopg
except ImportError:  # pragma: no cover - exercised only without the extra
    psycopg = None  # type: ignore[assignment]

INSTALL_HINT = "pip install 'compliance-orchestrator[postgresql]'"


class PgRow(tuple[Any, ...]):
    """A result row like sqlite3.Row: row[0], row["name"], keys(), dict(row)."""

    _names: tuple[str, ...]

    def __new__(cls, names: tuple[str, ...], values: Sequence[Any]) -> PgRow:
        row = super().__new__(cls, values)
        row._names = names
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            try:
                return tuple.__getitem__(self, self._names.index(key))
            except ValueError:
                raise IndexError(f"no such column: {key}") from None
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._names)


def _row_factory(cursor: Any) -> Any:
    names = tuple(column.name for column in cursor.description or ())
    return lambda values: PgRow(names, values)


_TRANSLATED: dict[str, str] = {}


def translate(sql: str) -> str:
    """The store's `?` placeholders as psycopg's `%s` (a literal % doubled). The store's SQL
    has no `?` inside string literals (tests/store checks every statement runs on both)."""
    found = _TRANSLATED.get(sql)
    if found is None:
        found = _TRANSLATED[sql] = sql.replace("%", "%%").replace("?", "%s")
    return found


class _Cursor:
    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)

    async def fetchone(self) -> Any:
        if self._cursor.description is None:
            return None
        return await self._cursor.fetchone()

    async def fetchall(self) -> list[Any]:
        if self._cursor.description is None:
            return []
        return list(await self._cursor.fetchall())

    async def close(self) -> None:
        await self._cursor.close()


class _Execution:
    """`await conn.execute(...)` and `async with conn.execute(...) as cursor`, as aiosqlite."""

    def __init__(self, conn: PgConnection, sql: str, params: Sequence[Any]) -> None:
        self._conn, self._sql, self._params = conn, sql, params
        self._cursor: _Cursor | None = None

    async def _run(self) -> _Cursor:
        raw = self._conn.raw.cursor(row_factory=_row_factory)
        await raw.execute(translate(self._sql), tuple(self._params) or None)
        return _Cursor(raw)

    def __await__(self) -> Generator[Any, None, _Cursor]:
        return self._run().__await__()

    async def __aenter__(self) -> _Cursor:
        self._cursor = await self._run()
        return self._cursor

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        if self._cursor is not None:
            await self._cursor.close()


class PgConnection:
    """A psycopg AsyncConnection (autocommit) behind the store's SqlConnection interface."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def execute(self, sql: str, parameters: Any = (), /) -> _Execution:
        return _Execution(self, sql, parameters or ())

    async def close(self) -> None:
        await self.raw.close()


class StoreUnavailable(ConfigError):
    """The PostgreSQL server cannot be reached, or refuses us. Exit 1 for the daemon (systemd
    restarts it until the server is back: RestartPreventExitStatus stops only 2 and 3) and
    for the commands, which say it in one line."""


_DESCRIBED = ("host", "hostaddr", "port", "dbname", "user")


def describe_dsn(dsn: str) -> str:
    """`host=db.example port=5432 dbname=compliance user=compliance`: where store.dsn points,
    for messages; never a password (nor any other parameter)."""
    if psycopg is None:
        return "store.dsn"
    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return "store.dsn (not a valid connection string)"
    shown = " ".join(f"{key}={parts[key]}" for key in _DESCRIBED if parts.get(key))
    return shown or "store.dsn (libpq defaults)"


def unavailable(dsn: str, error: Exception, password: str | None) -> StoreUnavailable:
    """One line naming the server and database, with libpq's reason, redacted."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    text = redact_text(first.removeprefix("connection failed: ")
                       .removeprefix("connection is bad: "), (password,) if password else ())
    return StoreUnavailable(f"cannot connect to PostgreSQL ({describe_dsn(dsn)}): {text}")


async def connect_pg(dsn: str, password: str | None, host_id: str | None = None) -> PgConnection:
    """An autocommit connection, named `compliance-orchestrator/<host_id>` in
    pg_stat_activity; errors never show the password (libpq may echo the DSN)."""
    if psycopg is None:
        raise ConfigError(f'store.backend = "postgresql" needs psycopg: {INSTALL_HINT}')
    try:
        extra: dict[str, Any] = {} if password is None else {"password": password}
        name = "compliance-orchestrator" + (f"/{host_id}" if host_id else "")
        raw = await psycopg.AsyncConnection.connect(dsn, autocommit=True,
                                                    application_name=name,
                                                    **extra)
    except psycopg.Error as error:
        raise unavailable(dsn, error, password) from None
    return PgConnection(raw)


class PostgresStore(Store):
    """sqlite.Store's write model on PostgreSQL (see the module docstring)."""

    BEGIN = "BEGIN ISOLATION LEVEL READ COMMITTED"
    IS = "IS NOT DISTINCT FROM"
    FOR_UPDATE = " FOR UPDATE"
    INTEGRITY_ERRORS = (psycopg.IntegrityError,) if psycopg is not None else ()

    def __init__(self, conn: PgConnection, clock: Clock, host_id: str | None = None, *,
                 db_clock: bool = True) -> None:
        super().__init__(conn, clock, host_id)
        # db_clock=False: lease and host times come from the injected Clock instead of the
        # server's, so tests move time across a lease's expiry as they do on SQLite.
        self.db_clock = db_clock

    @classmethod
    async def open_pg(cls, dsn: str, clock: Clock, *, password: str | None = None,
                      host_id: str | None = None, db_clock: bool = True,
                      migrate: bool = True) -> PostgresStore:
        """Connect and migrate; with `migrate=False` (command-line tools), refuse a database
        that needs a migration instead (MigrationError)."""
        from orchestrator.store.pg_migrate import apply_pg_migrations, pending_pg_migrations

        conn = await connect_pg(dsn, password, host_id)
        try:
            if migrate:
                await apply_pg_migrations(conn)
            elif pending := await pending_pg_migrations(conn):
                raise MigrationError(
                    f"the PostgreSQL store needs migration(s) {', '.join(map(str, pending))}:"
                    " start the daemon (it migrates) or run `migrate`"
                )
        except BaseException:
            await conn.close()
            raise
        return cls(conn, clock, host_id, db_clock=db_clock)

    async def lease_now(self) -> datetime:
        if not self.db_clock:
            return self.clock.now()
        row = await self._fetch_one("SELECT clock_timestamp()")
        assert row is not None
        value: datetime = row[0]
        return value

    def _ts(self, value: datetime) -> Any:
        return value

    def _read_ts(self, value: Any) -> datetime | None:
        return value if value is None or isinstance(value, datetime) else super()._read_ts(value)
