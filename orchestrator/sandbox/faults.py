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
Light module: the CLI parser uses `parse_fault_spec`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

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

    def take(self, endpoint: str) -> Fault | None:
        """Consume one use of the oldest fault matching `endpoint`."""
        with self._lock:
            for index, fault in enumerate(self._queue):
                if fault.endpoint in (endpoint, "*") and applies(fault.kind, endpoint):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        del self._queue[index]
                    return replace(fault, remaining=1)
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
