"""Fixtures shared by every test folder: the one factory of sandboxes on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from daemon_helpers import TOKEN
from pg_server import PgServer, pg_server_session

from orchestrator.sandbox import Sandbox, SandboxConfig
from orchestrator.sandbox.clock import SandboxClock

# The daemon tests' sandbox: their token, jobs complete after 0.2 s, reproducible results.
SANDBOX_DEFAULTS: dict[str, Any] = {"token": TOKEN, "processing_time_s": 0.2, "seed": 11}

MakeSandbox = Callable[..., Sandbox]


@pytest.fixture
def make_sandbox() -> MakeSandbox:
    """`async with make_sandbox(**settings) as sb:` a sandbox on 127.0.0.1, stopped when the
    block ends. `settings` are SandboxConfig fields over SANDBOX_DEFAULTS; `clock=` gives it
    a SandboxClock of the test's choosing (e.g. one set off the local clock)."""

    def make(*, clock: SandboxClock | None = None, **settings: Any) -> Sandbox:
        return Sandbox(SandboxConfig(**{**SANDBOX_DEFAULTS, **settings}), clock=clock)

    return make


@pytest.fixture
async def sandbox(make_sandbox: MakeSandbox) -> AsyncIterator[Sandbox]:
    async with make_sandbox() as sb:
        yield sb



@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A real PostgreSQL server for the session (tests/helpers/pg_server.py): skips locally
    without the binaries, fails under CI=true."""
    yield from pg_server_session()
