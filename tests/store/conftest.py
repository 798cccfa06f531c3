"""Fixtures shared by the store tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
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
