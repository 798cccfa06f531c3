"""`running_watch`: the inbox watch loop in a task for the length of an `async with` block."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Protocol

import anyio

from orchestrator.files.inbox import Candidate, InboxScanner, InvalidEntry, watch_inbox


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
