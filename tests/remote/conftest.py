"""Fixtures of the remote adapter tests: a sandbox with instant processing, a client session
like the daemon's, and the X API client pointed at the sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from clocks import SandboxTime
from remote_helpers import TOKEN

from orchestrator.remote.xapi import XApi, make_session
from orchestrator.sandbox import Sandbox


@pytest.fixture
async def sb(make_sandbox: Callable[..., Sandbox]) -> AsyncIterator[Sandbox]:
    async with make_sandbox(token=TOKEN, processing_time_s=0, seed=3) as sandbox:
        yield sandbox


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with make_session(connect_timeout_s=5, read_timeout_s=10) as client:
        yield client


@pytest.fixture
def api(sb: Sandbox, session: aiohttp.ClientSession) -> XApi:
    return XApi(session, sb.base_url, TOKEN, clock=SandboxTime(sb.clock))
