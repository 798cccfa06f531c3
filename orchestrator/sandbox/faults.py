"""Scripted faults: the next N requests to an endpoint misbehave in a chosen way.

Kinds: "429" (rate limited, recorded body), "500", "503", "reset" (connection dropped,
optionally after reading `after_bytes` of an upload body), "slow" (answer after `delay`
seconds) and "truncate" (the body is cut after `after_bytes`; default half of it).
Endpoints: create, get, list (API), upload, download (storage) and "*" (any of them).
Light module: the CLI parser uses `parse_fault_spec`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

KINDS = ("429", "500", "503", "reset", "slow", "truncate")
ENDPOINTS = ("create", "get", "list", "upload", "download", "*")
SPEC_HELP = (
    "ENDPOINT:KIND[:COUNT[:VALUE]] with ENDPOINT one of create,get,list,upload,download,* and "
    "KIND one of 429,500,503,reset,slow,truncate; VALUE is the delay in seconds for slow, "
    "the byte count for truncate/reset, the retry-after seconds for 429"
)


@dataclass(slots=True)
class Fault:
    endpoint: str
    kind: str
    remaining: int
    delay: float = 2.0  # slow
    after_bytes: int | None = None  # truncate / reset
    retry_after: float = 1.0  # 429: x-rate-limit-reset = now + retry_after

    def public(self) -> dict[str, Any]:
        return asdict(self)


def make_fault(
    endpoint: str,
    kind: str,
    count: int = 1,
    *,
    delay: float | None = None,
    after_bytes: int | None = None,
    retry_after: float | None = None,
) -> Fault:
    kind = str(kind)
    if endpoint not in ENDPOINTS:
        raise ValueError(f"fault endpoint must be one of {', '.join(ENDPOINTS)}, not {endpoint!r}")
    if kind not in KINDS:
        raise ValueError(f"fault kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if count < 1:
        raise ValueError("fault count must be >= 1")
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
            elif kind in ("truncate", "reset"):
                options["after_bytes"] = int(value)
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

    def __init__(self, fail_next_jobs: Callable[[int, str], None] | None = None) -> None:
        self._lock = threading.Lock()
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
    ) -> Fault:
        """Make the next `count` requests to `endpoint` fail with `kind` (FIFO per endpoint)."""
        fault = make_fault(
            endpoint, kind, count, delay=delay, after_bytes=after_bytes, retry_after=retry_after
        )
        with self._lock:
            self._queue.append(fault)
        return fault

    def take(self, endpoint: str) -> Fault | None:
        """Consume one use of the oldest fault matching `endpoint`."""
        with self._lock:
            for index, fault in enumerate(self._queue):
                if fault.endpoint in (endpoint, "*"):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        del self._queue[index]
                    return Fault(
                        fault.endpoint,
                        fault.kind,
                        1,
                        fault.delay,
                        fault.after_bytes,
                        fault.retry_after,
                    )
        return None

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
            return [fault.public() for fault in self._queue]

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
