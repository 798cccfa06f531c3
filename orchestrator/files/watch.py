"""Watch the inbox: scan at start, on every watchfiles event, when a pending file is due and
at least every `rescan_interval_s`, and hand what the scan finds to the daemon.

An event never means "file complete" (inbox.py's scanner decides that), and events are lost
on network filesystems and while the daemon is down: they only trigger a rescan sooner.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus
from watchfiles import Change, awatch

from orchestrator.files.inbox import Candidate, InboxScanner, InvalidEntry, is_ignored_name
from orchestrator.redact import redact_text
from orchestrator.wakeup import Wakeup

log = structlog.get_logger(__name__)

_DUE_SLACK_S = 0.01  # wake just after a pending file is due, not just before


def watch_filter(change: Change, path: str) -> bool:
    """watchfiles filter: events on ignored names never trigger a rescan."""
    del change
    return not is_ignored_name(Path(path).name)

class _Watcher:
    """awatch in a task; any failure (no inotify, watch limit) means rescans only."""

    def __init__(self, inbox: Path, wake: Wakeup, tg: TaskGroup) -> None:
        self._inbox = inbox
        self._wake = wake
        self._tg = tg
        self._stop: anyio.Event | None = None
        self._warned = False

    def start(self) -> None:
        self.stop()
        # awatch gets an event of ours: cancelling awatch would set the event it was given,
        # and its worker thread only notices a set event (within `step`), not a cancellation.
        self._stop = anyio.Event()
        self._tg.start_soon(self._run, self._stop)

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def _run(self, stop: anyio.Event) -> None:
        try:
            async for _changes in awatch(
                self._inbox,
                watch_filter=watch_filter,
                debounce=200,
                step=20,
                stop_event=stop,
                rust_timeout=1_000,
                recursive=True,
                # One unreadable subfolder must not cost us the events of all the others.
                ignore_permission_denied=True,
            ):
                self._wake.notify()
        except Exception as exc:
            if not self._warned:
                self._warned = True
                log.warning(
                    "inbox.watcher_unavailable",
                    error=type(exc).__name__,
                    error_msg=redact_text(str(exc)),
                    fallback="periodic rescans only",
                )


def _ensure_and_scan(
    scanner: InboxScanner,
) -> tuple[list[Path], list[Candidate], list[InvalidEntry]]:
    created = scanner.ensure_folders()
    candidates, invalid = scanner.scan()
    return created, candidates, invalid


async def _call(
    callback: Callable[[Any], Awaitable[object]], item: Candidate | InvalidEntry
) -> bool:
    try:
        await callback(item)
    except Exception as exc:
        log.warning(
            "inbox.callback_failed",
            file=item.path.name,
            job_type=item.job_type.value if item.job_type else None,
            error=type(exc).__name__,
            error_msg=redact_text(str(exc)),
        )
        return False
    return True


async def watch_inbox(
    scanner: InboxScanner,
    on_candidate: Callable[[Candidate], Awaitable[object]],
    on_invalid: Callable[[InvalidEntry], Awaitable[object]],
    *,
    rescan_interval_s: float,
    use_watcher: bool,
    stop_event: anyio.Event | None = None,
    on_scan: Callable[[list[Candidate]], None] = lambda candidates: None,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Scan and dispatch until `stop_event` is set (or cancelled).

    `on_candidate` is awaited for each stable file, in order, on every scan while the file
    stays in the inbox (claiming moves it out); `on_invalid` once per unchanged invalid entry.
    `on_scan` hears each scan's stable files before the first of them is handed on (the
    scheduler holds a burst's pack until they are all claimed).
    A callback that raises is logged and retried on the next scan. `task_status.started()`
    comes after the first scan and its callbacks.
    """
    if rescan_interval_s <= 0:
        raise ValueError("rescan_interval_s must be positive")
    wake = Wakeup()
    reported: dict[Path, tuple[str, int, int, int]] = {}
    started = False
    last_error: str | None = None

    def stopping() -> bool:
        return stop_event is not None and stop_event.is_set()

    async with anyio.create_task_group() as tg:
        watcher = _Watcher(scanner.inbox, wake, tg) if use_watcher else None

        async def relay_stop(event: anyio.Event) -> None:
            await event.wait()
            wake.notify()

        if stop_event is not None:
            tg.start_soon(relay_stop, stop_event)
        first = True
        try:
            while not stopping():
                wake.clear()
                try:
                    created, candidates, invalid = await anyio.to_thread.run_sync(
                        _ensure_and_scan, scanner
                    )
                except OSError as exc:  # e.g. the inbox cannot be created: retry later
                    message = redact_text(str(exc))
                    if message != last_error:
                        log.warning(
                            "inbox.scan_failed",
                            folder=str(scanner.inbox),
                            error=type(exc).__name__,
                            error_msg=message,
                        )
                    last_error = message
                    created, candidates, invalid = [], [], []
                else:
                    last_error = None
                for folder in created:
                    log.info("inbox.folder_created", folder=str(folder), at_start=first)
                if watcher is not None and (first or scanner.inbox in created):
                    watcher.start()  # (re)watch: a deleted root takes its inotify watch along
                first = False

                on_scan(candidates)
                for candidate in candidates:
                    if stopping():
                        break
                    await _call(on_candidate, candidate)
                present = {entry.path for entry in invalid}
                for path in [p for p in reported if p not in present]:
                    del reported[path]
                for entry in invalid:
                    if stopping():
                        break
                    if reported.get(entry.path) != entry.key and await _call(on_invalid, entry):
                        reported[entry.path] = entry.key

                if not started:
                    started = True
                    task_status.started()
                delay = rescan_interval_s
                due = scanner.next_due_in()
                if due is not None:
                    delay = min(delay, due + _DUE_SLACK_S)
                if not stopping():
                    await wake.wait(delay)
        finally:
            if watcher is not None:
                watcher.stop()
            tg.cancel_scope.cancel()
    if not started:
        task_status.started()
