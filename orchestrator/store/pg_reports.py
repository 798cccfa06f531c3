"""The reports' Reader on PostgreSQL (store/reports.py runs the same queries on both engines).

A plain (synchronous) psycopg connection for one command: one REPEATABLE READ, READ ONLY
transaction, so every query of a report sees the same snapshot and the server refuses any
write; rolled back and closed at the end. It never migrates, never takes the lease or a lock
(readers do not block the daemons' writers), and names itself `compliance-orchestrator/
report` in pg_stat_activity. Times of the cluster view come from the server's clock, as the
lease's do.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Any

from orchestrator.errors import ConfigError
from orchestrator.store.postgresql import INSTALL_HINT, translate, unavailable

try:
    import psycopg
    from psycopg.rows import dict_row
except ImportError:  # pragma: no cover - without the optional extra
    psycopg = None  # type: ignore[assignment]

APPLICATION_NAME = "compliance-orchestrator/report"
CONNECT_TIMEOUT_S = 10  # unless store.dsn sets connect_timeout: a command must not hang


class PgReader:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = self.conn.execute(translate(sql), tuple(params) or None)
        return list(cursor.fetchall())

    def has_table(self, name: str) -> bool:
        """On the connection's search_path, as the daemons see it."""
        return bool(self.rows("SELECT to_regclass(?) IS NOT NULL AS found", (name,))[0]["found"])

    def db_now(self) -> datetime | None:
        value: datetime = self.rows("SELECT clock_timestamp() AS now")[0]["now"]
        return value

    def schema_version(self) -> int:
        if not self.has_table("schema_version"):
            return 0
        return int(self.rows("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version")[0]["v"])


@contextmanager
def open_pg_reader(dsn: str, password: str | None) -> Iterator[PgReader]:
    """A read-only reader on `dsn`; StoreUnavailable (one line naming host and database,
    never the password) when the server cannot be reached or refuses the connection."""
    if psycopg is None:
        raise ConfigError(f'store.backend = "postgresql" needs psycopg: {INSTALL_HINT}')
    extra: dict[str, Any] = {} if password is None else {"password": password}
    try:
        if "connect_timeout" not in psycopg.conninfo.conninfo_to_dict(dsn):
            extra["connect_timeout"] = CONNECT_TIMEOUT_S
        conn = psycopg.connect(dsn, autocommit=False, row_factory=dict_row,
                               application_name=APPLICATION_NAME, **extra)
    except psycopg.Error as error:
        raise unavailable(dsn, error, password) from None
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True  # BEGIN ... READ ONLY: the server refuses any write
        yield PgReader(conn)
    finally:
        with suppress(psycopg.Error):  # a lost connection has nothing to roll back
            conn.rollback()
        conn.close()
