"""Fixtures shared by every test folder: the one factory of sandboxes on 127.0.0.1."""

from __future__ import annotations

import itertools
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
_PG_DATABASES = itertools.count(1)  # co_test_<n>: one fresh database per test


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
    name = f"co_test_{next(_PG_DATABASES)}"
    pg_server.psql(f"CREATE DATABASE {name} TEMPLATE {pg_template}")
    return pg_server.dsn(name)
