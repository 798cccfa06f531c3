"""Fixed-window rate limits, one bucket per endpoint, as recorded.

The window starts with the first request and lasts `rate_window_s`; `x-rate-limit-reset`
is that start + window in epoch seconds (e.g. first POST 21:09:08 -> reset 21:24:08).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from orchestrator.sandbox.clock import SandboxClock
from orchestrator.sandbox.config import SandboxConfig

ENDPOINTS = ("create", "get", "list")


@dataclass(frozen=True, slots=True)
class RateState:
    limit: int
    remaining: int
    reset: int  # epoch seconds
    allowed: bool

    def headers(self) -> dict[str, str]:
        return {
            "x-rate-limit-limit": str(self.limit),
            "x-rate-limit-remaining": str(self.remaining),
            "x-rate-limit-reset": str(self.reset),
        }


@dataclass(slots=True)
class _Bucket:
    start: float | None = None
    used: int = 0


class RateLimiter:
    def __init__(self, config: SandboxConfig, clock: SandboxClock) -> None:
        self._config = config
        self._clock = clock
        self._buckets = {endpoint: _Bucket() for endpoint in ENDPOINTS}

    def _current(self, endpoint: str) -> tuple[_Bucket, float]:
        bucket = self._buckets[endpoint]
        now = self._clock.timestamp()
        if bucket.start is None or now >= bucket.start + self._config.rate_window_s:
            bucket.start = now
            bucket.used = 0
        return bucket, now

    def _state(self, bucket: _Bucket, allowed: bool) -> RateState:
        limit = self._config.rate_limit
        assert bucket.start is not None
        return RateState(
            limit=limit,
            remaining=max(0, limit - bucket.used),
            reset=math.floor(bucket.start + self._config.rate_window_s),
            allowed=allowed,
        )

    def hit(self, endpoint: str) -> RateState:
        """Count one request; `allowed` is False once the window's limit is used up."""
        bucket, _ = self._current(endpoint)
        if bucket.used >= self._config.rate_limit:
            return self._state(bucket, allowed=False)
        bucket.used += 1
        return self._state(bucket, allowed=True)

    def peek(self, endpoint: str) -> RateState:
        """The headers for a response that does not count (e.g. 401)."""
        bucket, _ = self._current(endpoint)
        return self._state(bucket, allowed=True)

    def reset(self) -> None:
        for bucket in self._buckets.values():
            bucket.start = None
            bucket.used = 0
