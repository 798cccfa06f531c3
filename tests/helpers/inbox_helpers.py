"""Inbox test helpers: `running_watch` (the watch loop for the length of an `async with`
block) and an unprivileged read-permission check for tests that run as root."""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import anyio
import pytest

from orchestrator.files.inbox import Candidate, InboxScanner, InvalidEntry
from orchestrator.files.watch import watch_inbox


class Callbacks(Protocol):
    on_candidate: Callable[[Candidate], Awaitable[object]]
    on_invalid: Callable[[InvalidEntry], Awaitable[object]]


@asynccontextmanager
async def running_watch(
    scanner: InboxScanner, callbacks: Callbacks, *, rescan_interval_s: float, use_watcher: bool
) -> AsyncIterator[anyio.Event]:
    """`watch_inbox` runs from its first scan (done when the block is entered) until the block
    ends; the block gets its stop event. A block that sets it waits for the loop to return on
    its own (so a stop that does not work fails the test by its deadline); otherwise the loop
    is cancelled at the end of the block, as the daemon's task group would."""
    stop = anyio.Event()
    async with anyio.create_task_group() as group:
        await group.start(functools.partial(
            watch_inbox, scanner, callbacks.on_candidate, callbacks.on_invalid,
            rescan_interval_s=rescan_interval_s, use_watcher=use_watcher, stop_event=stop,
        ))
        yield stop
        if not stop.is_set():
            group.cancel_scope.cancel()


def read_permission_as_unprivileged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Root reads anything, so a chmod 000 file proves nothing when the tests run as root:
    at the OS seam (`os.access`), answer R_OK as a non-root owner would (its read bit)."""
    if os.geteuid() != 0:
        return
    real_access = os.access

    def access(path: Any, mode: int, **kwargs: Any) -> bool:
        readable_bit = real_access(path, os.F_OK) and Path(path).stat().st_mode & stat.S_IRUSR
        if mode & os.R_OK and not readable_bit:
            return False
        return real_access(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)
