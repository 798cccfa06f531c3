"""Fixtures of the daemon tests: an Intake over a real store and folders in tmp_path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orchestrator.clock import SystemClock
from orchestrator.core.model import JobType
from orchestrator.daemon.intake import Intake
from orchestrator.layout import Layout
from orchestrator.store.sqlite import Store


@pytest.fixture
async def intake(tmp_path: Path) -> AsyncIterator[Intake]:
    layout = Layout(tmp_path / "inbox", tmp_path / "outbox", tmp_path / "state")
    layout.ensure()
    layout.inbox_for(JobType.TWEETS).mkdir(parents=True)
    store = await Store.open(layout.db_path, SystemClock())
    try:
        yield Intake(store, layout)
    finally:
        await store.close()
