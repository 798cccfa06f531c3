"""Fixtures shared by the store tests: every test taking `store` runs on both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from clocks import FakeClock

from orchestrator.clock import Clock
from orchestrator.store.sqlite import Store

BACKENDS = ("sqlite", "postgresql")


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
