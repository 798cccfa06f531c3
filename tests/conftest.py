"""Shared fixtures for daemon tests: a sandbox on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from daemon_helpers import TOKEN

from orchestrator.sandbox import Sandbox, SandboxConfig


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(SandboxConfig(token=TOKEN, processing_time_s=0.2, seed=11)) as sb:
        yield sb
