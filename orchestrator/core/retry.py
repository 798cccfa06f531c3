"""PURE retry policy: how long to wait after an error, and when to give up. No I/O."""

from __future__ import annotations

import random
from dataclasses import dataclass

from orchestrator.errors import (
    AuthError,
    ConflictError,
    IntegrityError,
    RateLimited,
    RetryableError,
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_stage_retries: int = 10
    backoff_initial_s: float = 2.0
    backoff_max_s: float = 300.0


@dataclass(frozen=True, slots=True)
class RetryAt:
    """Try the same step again after `delay_s`. `counted` errors use up the stage's budget."""

    delay_s: float
    counted: bool


@dataclass(frozen=True, slots=True)
class GiveUp:
    reason: str


def backoff_delay(step: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Capped exponential backoff with jitter in [delay/2, delay], so restarts don't stampede."""
    ceiling = min(policy.backoff_max_s, policy.backoff_initial_s * (2 ** min(step, 30)))
    return rng.uniform(ceiling / 2, ceiling)


def retry_decision(
    error: BaseException,
    *,
    counted_so_far: int,
    waits_so_far: int,
    policy: RetryPolicy,
    rng: random.Random,
) -> RetryAt | GiveUp:
    """Classify once. Rate limits, conflicts and auth trouble wait without using up the budget:
    they are not faults of this batch. Other retryable errors are counted and bounded."""
    step = counted_so_far + waits_so_far
    if isinstance(error, RateLimited):
        reset_in = error.retry_after if error.retry_after is not None else policy.backoff_max_s
        # A little jitter past the reset so several clients of one app don't collide.
        return RetryAt(max(0.0, reset_in) + rng.uniform(0.5, 3.0), counted=False)
    if isinstance(error, ConflictError):
        return RetryAt(backoff_delay(step, policy, rng), counted=False)
    if isinstance(error, AuthError):
        return RetryAt(policy.backoff_max_s, counted=False)
    if isinstance(error, RetryableError | IntegrityError):
        if counted_so_far + 1 > policy.max_stage_retries:
            return GiveUp(f"{type(error).__name__} after {counted_so_far} retries")
        delay = backoff_delay(step, policy, rng)
        if error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return RetryAt(delay, counted=True)
    return GiveUp(type(error).__name__)
