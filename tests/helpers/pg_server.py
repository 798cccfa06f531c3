"""The tests' PostgreSQL server: bench/pg_server.py's throwaway cluster (one copy of that
logic), started once per test session (`pg_server` fixture in tests/conftest.py); each test
gets a fresh database made from a migrated template (`CREATE DATABASE ... TEMPLATE`,
milliseconds).

Without the binaries the PostgreSQL tests skip with a message saying so, except under
CI=true, where they fail: CI must test both backends (.ci/run installs the package).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from bench.pg_server import START_TIMEOUT_S, PgServer, find_bindir, missing, start_server

__all__ = ["START_TIMEOUT_S", "PgServer", "find_bindir", "pg_server_session", "start_server",
           "unavailable"]


def unavailable(reason: str) -> None:
    """Skip locally, fail under CI=true (the PostgreSQL tests must run there)."""
    message = f"PostgreSQL tests need a PostgreSQL server: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI=true: install the Debian `postgresql` package, see .ci/run)")
    pytest.skip(message + " (install `postgresql`, or set PG_BINDIR)")


def pg_server_session() -> Iterator[PgServer]:
    """The body of the session fixture: start, yield, stop and remove."""
    reason = missing()
    bindir = find_bindir()
    if reason is not None or bindir is None:
        unavailable(reason or "no server binaries")
        return
    server = start_server(bindir)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)
