"""Scripted faults: the next N requests to an endpoint misbehave in a chosen way.

Kinds: "429" (rate limited, recorded body), "500", "503", "reset" (connection dropped,
optionally after reading `after_bytes` of an upload body), "slow" (answer after `delay`
seconds), "truncate" (the body is cut after `after_bytes`; default half of it), and two
storage-only kinds: "403" (GCS's XML `SignatureDoesNotMatch`, or `AccessDenied` as `code`;
upload and download) and "corrupt" (download only: the byte after `after_bytes`, default
the middle one, is altered while the headers, x-goog-hash included, stay those of the real
object, so only a checksum can tell).
Endpoints: create, get, list (API), upload, download (storage) and "*" (any of them; for a
storage-only kind, any endpoint it applies to).
Outages (`Faults.outage`): every matching request fails, for a span of the sandbox clock's
time rather than a count, taking `kinds` in turn (e.g. 503, then a reset); optionally the
span starts with the first request to one endpoint (an outage "during the upload"). With the
clock moved forward (SandboxClock.advance, or a daemon on a warped clock) a 24-hour outage
passes in seconds.
Light module: the CLI parser uses `parse_fault_spec`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol


class _Clock(Protocol):
    def now(self) -> datetime: ...

KINDS = ("429", "500", "503", "reset", "slow", "truncate", "403", "corrupt")
ENDPOINTS = ("create", "get", "list", "upload", "download", "*")
# Kinds that only exist on some endpoints (the others take every kind).
ONLY_ON: dict[str, tuple[str, ...]] = {"403": ("upload", "download"), "corrupt": ("download",)}
FORBIDDEN_CODES = ("SignatureDoesNotMatch", "AccessDenied")  # the 403 bodies GCS sends
SPEC_HELP = (
    "ENDPOINT:KIND[:COUNT[:VALUE]] with ENDPOINT one of create,get,list,upload,download,* and "
    "KIND one of 429,500,503,reset,slow,truncate, or 403 (upload/download) or corrupt "
    "(download); VALUE is the delay in seconds for slow, the byte count for truncate/reset, "
    "the byte offset for corrupt (default the middle), the retry-after seconds for 429, "
    "SignatureDoesNotMatch (default) or AccessDenied for 403"
)


def applies(kind: str, endpoint: str) -> bool:
    """Whether a fault of `kind` can happen on `endpoint` ("*" matches any)."""
    return endpoint == "*" or endpoint in ONLY_ON.get(kind, (endpoint,))


@dataclass(slots=True)
class Fault:
    endpoint: str
    kind: str
    remaining: int
    delay: float = 2.0  # slow
    after_bytes: int | None = None  # truncate / reset
    retry_after: float = 1.0  # 429: x-rate-limit-reset = now + retry_after
    code: str = "SignatureDoesNotMatch"  # 403: the GCS error code of the body
    # Outages only: how long, from when (None: not started yet), started by which endpoint,
    # the kinds taken in turn, and how many requests it has failed so far.
    outage_s: float | None = None
    until: datetime | None = None
    starts_with: str | None = None
    kinds: tuple[str, ...] = ()
    served: int = 0

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        data["until"] = None if self.until is None else self.until.isoformat()
        data["kinds"] = list(self.kinds)
        return data


def make_fault(
    endpoint: str,
    kind: str,
    count: int = 1,
    *,
    delay: float | None = None,
    after_bytes: int | None = None,
    retry_after: float | None = None,
    code: str | None = None,
) -> Fault:
    kind = str(kind)
    if endpoint not in ENDPOINTS:
        raise ValueError(f"fault endpoint must be one of {', '.join(ENDPOINTS)}, not {endpoint!r}")
    if kind not in KINDS:
        raise ValueError(f"fault kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if not applies(kind, endpoint):
        raise ValueError(
            f"fault kind {kind} only happens on {' and '.join(ONLY_ON[kind])}, not {endpoint}"
        )
    if count < 1:
        raise ValueError("fault count must be >= 1")
    if code is not None and code not in FORBIDDEN_CODES:
        raise ValueError(f"403 code must be one of {', '.join(FORBIDDEN_CODES)}, not {code!r}")
    if delay is not None and delay < 0:
        raise ValueError("delay must be >= 0")
    if after_bytes is not None and after_bytes < 0:
        raise ValueError("after_bytes must be >= 0")
    if retry_after is not None and retry_after < 0:
        raise ValueError("retry_after must be >= 0")
    fault = Fault(endpoint=endpoint, kind=kind, remaining=count, after_bytes=after_bytes)
    if delay is not None:
        fault.delay = delay
    if retry_after is not None:
        fault.retry_after = retry_after
    if code is not None:
        fault.code = code
    return fault


def parse_fault_spec(spec: str) -> dict[str, Any]:
    """`upload:500:3` -> keyword arguments for `Faults.add` (ValueError when malformed)."""
    parts = spec.split(":")
    if not 2 <= len(parts) <= 4:
        raise ValueError(f"fault {spec!r} is not {SPEC_HELP}")
    endpoint, kind = parts[0], parts[1]
    options: dict[str, Any] = {"endpoint": endpoint, "kind": kind}
    try:
        if len(parts) >= 3:
            options["count"] = int(parts[2])
        if len(parts) == 4:
            value = parts[3]
            if kind == "slow":
                options["delay"] = float(value)
            elif kind in ("truncate", "reset", "corrupt"):
                options["after_bytes"] = int(value)
            elif kind == "403":
                options["code"] = value
            elif kind == "429":
                options["retry_after"] = float(value)
            else:
                raise ValueError(f"fault kind {kind} takes no value")
    except ValueError as exc:
        raise ValueError(f"fault {spec!r}: {exc}") from None
    make_fault(**options)  # validate now, not on first use
    return options


class Faults:
    """The queue of scripted faults. Thread-safe: tests may script from another thread."""

    def __init__(
        self, fail_next_jobs: Callable[[int, str], None] | None = None, *,
        clock: _Clock | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock  # needed by outages only
        self._queue: list[Fault] = []
        self._fail_next_jobs = fail_next_jobs
        self._early_failures: list[tuple[int, str]] = []

    def add(
        self,
        endpoint: str,
        kind: str,
        count: int = 1,
        *,
        delay: float | None = None,
        after_bytes: int | None = None,
        retry_after: float | None = None,
        code: str | None = None,
    ) -> Fault:
        """Make the next `count` requests to `endpoint` fail with `kind` (FIFO per endpoint)."""
        fault = make_fault(
            endpoint,
            kind,
            count,
            delay=delay,
            after_bytes=after_bytes,
            retry_after=retry_after,
            code=code,
        )
        with self._lock:
            self._queue.append(fault)
        return fault

    def outage(
        self,
        seconds: float,
        kinds: Sequence[str] = ("503", "reset"),
        *,
        endpoint: str = "*",
        starts_with: str | None = None,
    ) -> Fault:
        """Every request to `endpoint` fails for `seconds` of the sandbox clock, with `kinds`
        in turn (429, 500, 503 or reset), from now or from the first request to
        `starts_with`. It ends by itself when the clock passes its end."""
        if self._clock is None:
            raise ValueError("outages need the sandbox clock (Faults(clock=...))")
        kinds = (kinds,) if isinstance(kinds, str) else tuple(str(kind) for kind in kinds)
        if seconds <= 0:
            raise ValueError("an outage lasts > 0 seconds")
        if not kinds or any(kind not in ("429", "500", "503", "reset") for kind in kinds):
            raise ValueError("outage kinds are some of 429, 500, 503, reset")
        if starts_with is not None and starts_with not in ENDPOINTS[:-1]:
            raise ValueError(f"starts_with must be one of {', '.join(ENDPOINTS[:-1])}")
        fault = make_fault(endpoint, kinds[0])
        fault.outage_s, fault.kinds, fault.starts_with = float(seconds), kinds, starts_with
        if starts_with is None:
            fault.until = self._clock.now() + timedelta(seconds=seconds)
        with self._lock:
            self._queue.append(fault)
        return fault

    def take(self, endpoint: str) -> Fault | None:
        """Consume one use of the oldest fault matching `endpoint` (an outage that has
        ended is dropped; one not started yet starts when its endpoint is asked for)."""
        with self._lock:
            for fault in list(self._queue):
                if fault.outage_s is not None:
                    taken = self._take_outage(fault, endpoint)
                    if taken is not None:
                        return taken
                elif fault.endpoint in (endpoint, "*") and applies(fault.kind, endpoint):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._queue.remove(fault)
                    return replace(fault, remaining=1)
        return None

    def _take_outage(self, fault: Fault, endpoint: str) -> Fault | None:
        """(Under the lock.) The fault for this request, if the outage covers it now."""
        assert self._clock is not None and fault.outage_s is not None
        if fault.endpoint not in (endpoint, "*"):
            return None
        now = self._clock.now()
        if fault.until is None:
            if fault.starts_with not in (None, endpoint):
                return None
            fault.until = now + timedelta(seconds=fault.outage_s)
        if now >= fault.until:
            self._queue.remove(fault)
            return None
        kind = fault.kinds[fault.served % len(fault.kinds)]
        fault.served += 1
        return replace(fault, kind=kind, remaining=1)

    def attach(self, fail_next_jobs: Callable[[int, str], None]) -> None:
        """Connect to the job store (faults may be scripted before the sandbox starts)."""
        with self._lock:
            self._fail_next_jobs = fail_next_jobs
            early, self._early_failures = self._early_failures, []
        for count, error in early:
            fail_next_jobs(count, error)

    def fail_next_jobs(self, count: int = 1, error: str = "Internal error") -> None:
        """The next `count` jobs created end in `failed` with this `error` string."""
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            if self._fail_next_jobs is None:
                self._early_failures.append((count, error))
                return
        self._fail_next_jobs(count, error)

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            now = self._clock.now() if self._clock is not None else None
            self._queue = [f for f in self._queue
                           if f.until is None or now is None or now < f.until]
            return [fault.public() for fault in self._queue]

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
