"""Fixtures shared by the store tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from clocks import FakeClock

from orchestrator.store.sqlite import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh, migrated state database on a fake clock, closed after the test."""
    opened = await Store.open(tmp_path / "state.db", FakeClock())
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def open_peer(
    store: Store, tmp_path: Path
) -> AsyncIterator[Callable[[str], Awaitable[Store]]]:
    """Open another store on the same database as `store` (another host: its own connection
    and host_id, the same clock), closed after the test."""
    opened: list[Store] = []

    async def open_one(host_id: str) -> Store:
        peer = await Store.open(tmp_path / "state.db", store.clock, host_id=host_id)
        opened.append(peer)
        return peer

    try:
        yield open_one
    finally:
        for peer in opened:
            await peer.close()
