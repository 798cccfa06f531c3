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


def _as_utc(value: datetime | str) -> datetime:
    """A datetime or any stored ISO-8601 text (old `+00:00` records too), in UTC; a naive
    one is taken as UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def rfc3339(value: datetime | str | None) -> str | None:
    """The one timestamp format shown to people and scripts (status, jobs, error.json):
    RFC 3339 UTC with `Z`, whole seconds, e.g. `2026-12-02T04:50:00Z`."""
    return None if value is None else _as_utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_ms(value: datetime | str | None) -> str | None:
    """rfc3339 with milliseconds, for records where sub-second timings matter (manifests):
    `2026-12-02T04:50:00.123Z`."""
    if value is None:
        return None
    utc = _as_utc(value)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def human_duration(seconds: float) -> str:
    """A deadline for people: `6d 23h`, `4h 05m`, `12m 30s`, `42s`; `overdue 5m 00s` when past."""
    if seconds < 0:
        return f"overdue {human_duration(-seconds)}"
    whole = int(seconds)
    days, hours, minutes, secs = (
        whole // 86400, whole % 86400 // 3600, whole % 3600 // 60, whole % 60
    )
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def from_iso(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)
