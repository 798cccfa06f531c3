"""Time, injected: the pure core takes `now` as an argument; adapters ask a Clock.

This is the one module that reads the system's clocks; everything else is handed a Clock
(tests hand in a manual one, see tests/helpers/clocks.py). The daemon's waits for time to pass
(a retry's backoff, the next poll, a rate-limit reset) go through `Clock.sleep` as well, so a
test clock can let a 24-hour outage pass in an instant.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol

import anyio


class Clock(Protocol):
    def now(self) -> datetime:
        """Aware UTC wall-clock time."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary start; never goes backwards."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once `seconds` of this clock's wall time have passed (a test clock may
        move its time forward instead of waiting)."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))


SYSTEM_CLOCK = SystemClock()


def kernel_monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as systemd's notify protocol wants it (MONOTONIC_USEC):
    the kernel's own clock, which an injected Clock must not stand in for."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def iso(value: datetime | None) -> str | None:
    """Database form of a timestamp: ISO-8601 UTC with microseconds (sorts as text)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def from_iso(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)
