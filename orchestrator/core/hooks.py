"""PURE hook policy: which targets an event concerns, the idempotency key, the hook's
environment, the webhook signature, and what an outcome means (done, retry later, failed).
No I/O: the daemon (daemon/hooks.py) runs the commands and requests.

The idempotency key is `<input id>-<batch key>` for a delivery (an input is delivered once,
by one batch; a requeued file is a new input) and `<input id>-rejected` for a rejection, so a
hook run again after a crash (at-least-once) sees the same key and can skip work it already
did. A pause has `paused-<unix time>`.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from orchestrator.core.retry import RetryPolicy, backoff_delay

HOOK_EVENTS = ("delivered", "rejected", "paused")
# Only these come from the daemon's own environment: never the token, never anything else.
INHERITED_ENV = ("PATH", "LANG", "TZ")
OUTPUT_TAIL_BYTES = 4096  # of a hook's stdout+stderr, kept for the log
SIGNATURE_HEADER = "X-Compliance-Signature"
EVENT_HEADER = "X-Compliance-Event"
KEY_HEADER = "X-Compliance-Idempotency-Key"
HOOK_RETRY = RetryPolicy(backoff_initial_s=5.0, backoff_max_s=600.0)


class RunState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class HookTarget:
    """A configured hook or webhook, as the store needs it to write intent rows."""

    kind: str  # "hook" | "webhook"
    target: str  # "hooks[0]", "webhooks[1]": its place in the config file
    on: str
    job_type: str  # "" = every type
    max_attempts: int


def concerned(targets: tuple[HookTarget, ...], event: str, job_type: str | None,
              ) -> list[HookTarget]:
    """The targets an event of `job_type` (None: not about one type, e.g. a pause) runs."""
    return [t for t in targets
            if t.on == event and (not t.job_type or job_type is None or t.job_type == job_type)]


def idempotency_key(event: str, input_id: int | None, batch_key: str | None,
                    at_unix: int = 0) -> str:
    if event == "paused" or input_id is None:
        return f"paused-{at_unix}"
    if event == "rejected":
        return f"{input_id}-rejected"
    return f"{input_id}-{batch_key or 'nobatch'}"


def hook_environment(inherited: Mapping[str, str], values: Mapping[str, object]
                     ) -> dict[str, str]:
    """PATH/LANG/TZ from `inherited`, then COMPLIANCE_<NAME> for every set value."""
    env = {name: inherited[name] for name in INHERITED_ENV if name in inherited}
    for name, value in values.items():
        if value is not None:
            env[f"COMPLIANCE_{name.upper()}"] = str(value)
    return env


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """`t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">` (the Stripe convention)."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: bytes, header: str, body: bytes, now_unix: int, tolerance_s: int = 300
           ) -> bool:
    """The receiver's side of `sign` (used by tests and shown in the README)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return (abs(now_unix - timestamp) <= tolerance_s
            and hmac.compare_digest(expected, parts.get("v1", "")))


def webhook_verdict(status: int) -> str:
    """2xx: done; 4xx (other than 408 and 429, which ask to come back): failed, no retry;
    anything else (5xx, 3xx we do not follow): retry."""
    if 200 <= status < 300:
        return "done"
    if 400 <= status < 500 and status not in (408, 429):
        return "failed"
    return "retry"


@dataclass(frozen=True, slots=True)
class AfterFailure:
    state: RunState  # PENDING (again, after delay_s) or FAILED
    delay_s: float


def after_failure(attempts: int, max_attempts: int, rng: random.Random,
                  policy: RetryPolicy = HOOK_RETRY, *, permanent: bool = False) -> AfterFailure:
    """`attempts` runs so far (this one included) failed: try again after a capped,
    jittered exponential backoff (core.retry), or give up once max_attempts are used."""
    if permanent or attempts >= max_attempts:
        return AfterFailure(RunState.FAILED, 0.0)
    return AfterFailure(RunState.PENDING, backoff_delay(attempts - 1, policy, rng))


def tail(buffer: bytes, chunk: bytes, limit: int = OUTPUT_TAIL_BYTES) -> bytes:
    """The last `limit` bytes of buffer + chunk."""
    joined = buffer + chunk
    return joined[-limit:]
