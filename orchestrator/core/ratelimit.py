"""Rate-limit bookkeeping for the X API, one bucket per endpoint. Pure: no I/O, no clock.

The X API answers every call with `x-rate-limit-limit`, `x-rate-limit-remaining` and
`x-rate-limit-reset` (epoch seconds when the fixed 15-minute window ends). Buckets are per
endpoint (create, get, list), shared by every client of the same app, so the daemon keeps a
configurable reserve free for the others instead of spending the budget to zero.

The reset is an instant on the server's clock. A local clock 15 minutes off would turn it
into a wait of 0 s or of 30 minutes, so it is read against the server's `Date` header (the
same response's idea of "now") and only the difference is applied to the local clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

from orchestrator.core.limits import RATE_WINDOW_S

LIMIT_HEADER = "x-rate-limit-limit"
REMAINING_HEADER = "x-rate-limit-remaining"
RESET_HEADER = "x-rate-limit-reset"
DATE_HEADER = "date"
# `Date` has whole seconds: a difference this small is its rounding plus latency, not skew,
# and the local clock (finer) is used as is.
SKEW_TOLERANCE_S = 2.0


@dataclass(frozen=True, slots=True)
class RateLimit:
    limit: int
    remaining: int
    reset_at: float  # epoch seconds on the local clock (see server_now)
    # x-rate-limit-reset as sent (server clock): identifies the window, not part of equality.
    window: float | None = field(default=None, compare=False)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # aiohttp's CIMultiDictProxy is case-insensitive; a plain dict may not be.
    value = headers.get(name)
    if value is None:
        for key, candidate in headers.items():
            if key.lower() == name:
                return candidate
    return value


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def server_now(headers: Mapping[str, str], local_now: float) -> float:
    """The server's "now" (epoch seconds) per the response's `Date` header.

    `local_now` when the header is missing or unreadable, or when it agrees with the local
    clock within SKEW_TOLERANCE_S.
    """
    value = _header(headers, DATE_HEADER)
    if value is None:
        return local_now
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return local_now
    if moment.tzinfo is None:  # "-0000": no zone information, not trustworthy
        return local_now
    server = moment.timestamp()
    return local_now if abs(server - local_now) <= SKEW_TOLERANCE_S else server


def seconds_until(instant: float, headers: Mapping[str, str], local_now: float) -> float:
    """Seconds from now until `instant`, an epoch time on the server's clock (may be < 0)."""
    return instant - server_now(headers, local_now)


def parse_rate_limit(
    headers: Mapping[str, str], local_now: float | None = None
) -> RateLimit | None:
    """The rate-limit headers of one response, or None when absent or unreadable.

    With `local_now`, `reset_at` is moved onto the local clock (see `server_now`); without
    it, it is the header's value as is.
    """
    remaining = _int(_header(headers, REMAINING_HEADER))
    reset = _int(_header(headers, RESET_HEADER))
    if remaining is None or reset is None or remaining < 0:
        return None
    limit = _int(_header(headers, LIMIT_HEADER))
    reset_at = float(reset)
    if local_now is not None:
        reset_at = local_now + seconds_until(reset_at, headers, local_now)
    return RateLimit(
        limit=limit if limit is not None else remaining,
        remaining=remaining,
        reset_at=reset_at,
        window=float(reset),
    )


# One 15-minute window plus slack: a reset further away than this is clock skew between
# us and the server (or a test moving the server's clock), not a reason to sleep for days.
MAX_WAIT_S = RATE_WINDOW_S + 60.0


class RateBudget:
    """What the server last said about each endpoint's bucket."""

    def __init__(self, *, max_wait_s: float = MAX_WAIT_S) -> None:
        self._limits: dict[str, RateLimit] = {}
        self._max_wait_s = max_wait_s

    def update(
        self, endpoint: str, headers: Mapping[str, str], *, now: float | None = None
    ) -> None:
        """Record the rate-limit headers of a response; responses without them change nothing.

        `now` is the local clock when the response arrived (see `parse_rate_limit`).
        """
        parsed = parse_rate_limit(headers, now)
        if parsed is None:
            return
        previous = self._limits.get(endpoint)
        # Responses of concurrent calls can arrive out of order: within one window the
        # lowest remaining count is the newest truth.
        if (
            previous is not None
            and previous.window == parsed.window
            and previous.remaining < parsed.remaining
        ):
            return
        self._limits[endpoint] = parsed

    def exhaust(self, endpoint: str, reset_at: float) -> None:
        """Mark a bucket empty until `reset_at` (a 429 without usable headers)."""
        previous = self._limits.get(endpoint)
        limit = previous.limit if previous is not None else 0
        self._limits[endpoint] = RateLimit(limit=limit, remaining=0, reset_at=reset_at)

    def wait_before(self, endpoint: str, now: float, *, reserve: int = 0) -> float:
        """Seconds to wait before the next call so that `reserve` requests stay free.

        0 when the bucket is unknown, its window has already reset, or more than `reserve`
        requests remain; otherwise the time until the window resets (at most `max_wait_s`).
        """
        known = self._limits.get(endpoint)
        if known is None or now >= known.reset_at:
            return 0.0
        if known.remaining > max(reserve, 0):
            return 0.0
        return min(known.reset_at - now, self._max_wait_s)

    def spacing(self, endpoint: str, now: float, *, reserve: int = 0) -> float:
        """Shortest interval between calls that spreads the usable budget over the window.

        A poller that never calls more often than this never hits the reserve. 0 when the
        bucket is unknown or its window has reset.
        """
        known = self._limits.get(endpoint)
        if known is None or now >= known.reset_at:
            return 0.0
        left = min(known.reset_at - now, self._max_wait_s)
        usable = known.remaining - max(reserve, 0)
        if usable <= 0:
            return left
        return left / usable

    def get(self, endpoint: str) -> RateLimit | None:
        return self._limits.get(endpoint)

    def snapshot(self) -> dict[str, RateLimit]:
        return dict(self._limits)
