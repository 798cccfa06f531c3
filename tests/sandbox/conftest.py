"""Fixtures for the sandbox tests: a running sandbox and a client that keeps URLs verbatim."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from orchestrator.sandbox import Sandbox, SandboxConfig

StartSandbox = Callable[..., Awaitable[Sandbox]]
# These tests check the sandbox as it ships: its own token and seed, not the daemon tests'.
OWN_DEFAULTS: dict[str, Any] = {"token": SandboxConfig().token, "seed": SandboxConfig().seed}


@pytest.fixture
async def start_sandbox(make_sandbox: Callable[..., Sandbox]) -> AsyncIterator[StartSandbox]:
    """Start sandboxes (tests/conftest.py's factory) with the sandbox's own defaults but
    instant processing; stopped at teardown."""
    started: list[Sandbox] = []

    async def start(**overrides: Any) -> Sandbox:
        settings: dict[str, Any] = {**OWN_DEFAULTS, "processing_time_s": 0.0}
        settings.update(overrides)
        sandbox = make_sandbox(**settings)
        await sandbox.start()
        started.append(sandbox)
        return sandbox

    yield start
    for sandbox in started:
        await sandbox.stop()


@pytest.fixture
async def sb(start_sandbox: StartSandbox) -> Sandbox:
    return await start_sandbox()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
