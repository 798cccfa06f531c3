"""Clocks for tests (each implements orchestrator.clock.Clock)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import anyio

from orchestrator.sandbox.clock import SandboxClock


class FakeClock:
    """Wall and monotonic time that only move when told to.

    `advance()` moves both; a test may also set `wall` (epoch seconds) or `mono` on their own,
    e.g. to model a busy daemon whose monotonic clock moved while files kept their mtimes.
    `sleep()` does not wait: it advances the clock by the time asked for.
    """

    def __init__(self, start: datetime | None = None, *, mono: float = 0.0) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self.mono = mono
        self.slept = 0.0  # total seconds of sleep() asked for

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

    async def sleep(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.advance(seconds)
        self.slept += seconds
        await anyio.lowlevel.checkpoint()


class SandboxTime:
    """The sandbox's wall clock with real monotonic time: the daemon and "X" share one time.

    `warp=False`: sleeps take real time (tests move the sandbox clock themselves).
    `warp=True`: a sleep moves the sandbox clock forward by what was asked and returns at
    once, so the daemon's backoffs and polls let hours of X's time pass in milliseconds
    (X's job processing, expiry, signed URLs and rate windows all run on that clock).
    `warped_s` is the time skipped so.
    """

    def __init__(self, sandbox_clock: SandboxClock, *, warp: bool = False) -> None:
        self._sandbox = sandbox_clock
        self.warp = warp
        self.warped_s = 0.0

    def now(self) -> datetime:
        return self._sandbox.now()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        if not self.warp:
            await anyio.sleep(seconds)
            return
        self._sandbox.advance(seconds)
        self.warped_s += seconds
        await anyio.lowlevel.checkpoint()
