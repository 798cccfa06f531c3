"""PURE retry policy: the outage model. How long to wait after an error, and whether the error
is transient (wait and try again, forever) or a permanent answer (stop this step). No I/O.

Transient failures (connection refused/reset, DNS, TLS, timeouts, 5xx, 408, 429, 409, a corrupt
download: `RetryableError`; local OSError) back off exponentially with jitter, capped at
`backoff_max_s`, for as long as the stage's deadline allows (core.machine judges deadlines).
Real outages last hours; a transient failure alone never rejects an input or throws away a job.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from orchestrator.errors import AuthError, ConflictError, RateLimited, RetryableError


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    # Consecutive counted transient failures of one stage after which the retry line is an
    # error (an incident: X or the network has been failing for a while). Never a give-up.
    max_stage_retries: int = 10
    backoff_initial_s: float = 2.0
    backoff_max_s: float = 300.0


@dataclass(frozen=True, slots=True)
class RetryAt:
    """Try the same step again after `delay_s`. `counted` errors are failures of the stage
    (5xx, resets, timeouts), not waits the server asked for (429, 409) or a paused token;
    `escalate` marks the failure that makes the stage an incident (logged as an error)."""

    delay_s: float
    counted: bool
    escalate: bool = False


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Not transient: retrying the same request will not help (a permanent answer)."""

    reason: str


def is_transient(error: BaseException) -> bool:
    """Whether the outage model retries `error` in place (auth trouble waits too, paused)."""
    return isinstance(error, RetryableError | AuthError | OSError)


def backoff_delay(step: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Capped exponential backoff with jitter in [delay/2, delay], so restarts don't stampede."""
    ceiling = min(policy.backoff_max_s, policy.backoff_initial_s * (2 ** min(step, 30)))
    return rng.uniform(ceiling / 2, ceiling)


def escalates(failures: int, policy: RetryPolicy) -> bool:
    """Whether the `failures`-th consecutive counted failure of a stage starts an incident
    (exactly once per stage: the first failure when max_stage_retries is 0 or 1)."""
    return failures == max(1, policy.max_stage_retries)


def retry_decision(
    error: BaseException,
    *,
    counted_so_far: int,
    waits_so_far: int,
    policy: RetryPolicy,
    rng: random.Random,
) -> RetryAt | GiveUp:
    """Classify once. Rate limits, conflicts and auth trouble wait without being counted: they
    are not failures of this batch. Other transient errors are counted (for the incident
    threshold) and retried without end; anything else is a permanent answer."""
    step = counted_so_far + waits_so_far
    if isinstance(error, RateLimited):
        reset_in = error.retry_after if error.retry_after is not None else policy.backoff_max_s
        # A little jitter past the reset so several clients of one app don't collide.
        return RetryAt(max(0.0, reset_in) + rng.uniform(0.5, 3.0), counted=False)
    if isinstance(error, ConflictError):
        return RetryAt(backoff_delay(step, policy, rng), counted=False)
    if isinstance(error, AuthError):
        return RetryAt(policy.backoff_max_s, counted=False)
    if isinstance(error, RetryableError):
        delay = backoff_delay(step, policy, rng)
        if error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return RetryAt(delay, counted=True, escalate=escalates(counted_so_far + 1, policy))
    return GiveUp(type(error).__name__)
