"""Fixtures shared by the store tests: every test taking `store` runs on both backends."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from clocks import FakeClock
from pg_server import PgServer

from orchestrator.clock import Clock
from orchestrator.store.sqlite import Store

BACKENDS = ("sqlite", "postgresql")
_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def pg_template(pg_server: PgServer) -> Iterator[str]:
    """A migrated database to copy (CREATE DATABASE ... TEMPLATE: a file copy, fast)."""
    import anyio

    from orchestrator.store.pg_migrate import apply_pg_migrations
    from orchestrator.store.postgresql import connect_pg

    pg_server.psql("CREATE DATABASE co_template")

    async def migrate() -> None:
        conn = await connect_pg(pg_server.dsn("co_template"), None)
        try:
            await apply_pg_migrations(conn)
        finally:
            await conn.close()

    anyio.run(migrate)
    yield "co_template"


@pytest.fixture
def pg_dsn(pg_server: PgServer, pg_template: str) -> str:
    """A fresh, migrated database of its own for one test."""
    name = f"co_test_{next(_numbers)}"
    pg_server.psql(f"CREATE DATABASE {name} TEMPLATE {pg_template}")
    return pg_server.dsn(name)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_store(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[..., Awaitable[Store]]:
    """`await open_store(clock, host_id=...)`: another store on this test's one database, on
    this test's backend (SQLite: tmp_path/state.db; PostgreSQL: a fresh database)."""
    dsn = request.getfixturevalue("pg_dsn") if backend == "postgresql" else None

    async def open_one(clock: Clock, host_id: str | None = None) -> Store:
        if dsn is None:
            return await Store.open(tmp_path / "state.db", clock, host_id=host_id)
        from orchestrator.store.postgresql import PostgresStore

        # db_clock=False: the lease follows the test's FakeClock, as on SQLite.
        return await PostgresStore.open_pg(dsn, clock, host_id=host_id, db_clock=False)

    return open_one


@pytest.fixture
async def store(open_store: Callable[..., Awaitable[Store]]) -> AsyncIterator[Store]:
    """A fresh, migrated state database on a fake clock, closed after the test; once per
    backend."""
    opened = await open_store(FakeClock())
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def open_peer(
    store: Store, open_store: Callable[..., Awaitable[Store]]
) -> AsyncIterator[Callable[[str], Awaitable[Store]]]:
    """Open another store on the same database as `store` (another host: its own connection
    and host_id, the same clock), closed after the test."""
    opened: list[Store] = []

    async def open_one(host_id: str) -> Store:
        peer = await open_store(store.clock, host_id=host_id)
        opened.append(peer)
        return peer

    try:
        yield open_one
    finally:
        for peer in opened:
            await peer.close()
