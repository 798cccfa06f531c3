"""Clocks for tests (each implements orchestrator.clock.Clock)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from orchestrator.sandbox.clock import SandboxClock


class FakeClock:
    """Wall and monotonic time that only move when told to.

    `advance()` moves both; a test may also set `wall` (epoch seconds) or `mono` on their own,
    e.g. to model a busy daemon whose monotonic clock moved while files kept their mtimes.
    """

    def __init__(self, start: datetime | None = None, *, mono: float = 0.0) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self.mono = mono

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self.mono

    @property
    def wall(self) -> float:
        return self._now.timestamp()

    @wall.setter
    def wall(self, value: float) -> None:
        self._now = datetime.fromtimestamp(value, UTC)

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self.mono += seconds


class SandboxTime:
    """The sandbox's wall clock (which tests move forward) with real monotonic time."""

    def __init__(self, sandbox_clock: SandboxClock) -> None:
        self._sandbox = sandbox_clock

    def now(self) -> datetime:
        return self._sandbox.now()

    def monotonic(self) -> float:
        return time.monotonic()
