"""Stable inbox files that are not claimed right now, and why: too big, no room, backing off.

A claim that fails for a local reason (the spool's disk is full, a quota) must not be tried on
every rescan: a copy of a big file that cannot fit would fill the disk, be undone and start
over every few seconds, starving the state database. So: a file larger than
`inbox.max_input_bytes` is rejected without being copied; a copy that would leave less than
`inbox.min_free_bytes` free is not started (statvfs, checked again every rescan, which costs
nothing); and a claim that failed anyway waits, doubling from `initial_s` to `max_s`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from orchestrator.clock import SYSTEM_CLOCK, Clock
from orchestrator.files.atomic import ensure_room
from orchestrator.files.inbox import Candidate

DEFAULT_BACKOFF_INITIAL_S = 30.0
DEFAULT_BACKOFF_MAX_S = 600.0


def too_large_reason(size: int, limit: int) -> str:
    return f"too large: {size} bytes, more than inbox.max_input_bytes ({limit})"


def check_room(candidate: Candidate, spool: Path, min_free: int) -> None:
    """NoRoom if claiming `candidate` means a copy (spool on another filesystem) that would
    leave less than `min_free` bytes free; a rename needs no room."""
    if spool.stat().st_dev != os.lstat(candidate.path).st_dev:
        ensure_room(spool, candidate.size, min_free)


@dataclass
class _Wait:
    signature: tuple[int, int, int]  # inode, size, mtime_ns: a changed file starts afresh
    until: float  # monotonic
    delay: float


class ClaimBackoff:
    """Per-file backoff for claims that failed for local reasons (not thread-safe)."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK, *, initial_s: float = DEFAULT_BACKOFF_INITIAL_S,
                 max_s: float = DEFAULT_BACKOFF_MAX_S) -> None:
        self._clock = clock
        self.initial_s = initial_s
        self.max_s = max_s
        self._waits: dict[Path, _Wait] = {}

    @staticmethod
    def _signature(candidate: Candidate) -> tuple[int, int, int]:
        return (candidate.inode, candidate.size, candidate.mtime_ns)

    def ready(self, candidate: Candidate) -> bool:
        wait = self._waits.get(candidate.path)
        if wait is None or wait.signature != self._signature(candidate):
            return True
        return self._clock.monotonic() >= wait.until

    def failed(self, candidate: Candidate) -> float:
        """Record a failed claim; the seconds until the next try."""
        wait = self._waits.get(candidate.path)
        same = wait is not None and wait.signature == self._signature(candidate)
        delay = min(self.max_s, wait.delay * 2) if same and wait else self.initial_s
        self._waits[candidate.path] = _Wait(self._signature(candidate),
                                            self._clock.monotonic() + delay, delay)
        return delay

    def succeeded(self, candidate: Candidate) -> None:
        self._waits.pop(candidate.path, None)
