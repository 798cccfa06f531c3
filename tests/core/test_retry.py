"""The retry policy's backoff and its waits that use up no budget (core/retry.py, pure).

The classification table (which errors retry, which give up) is in test_machine.py, next to
the machine that applies it.
"""

from __future__ import annotations

import random

import pytest

from orchestrator.core.retry import GiveUp, RetryAt, RetryPolicy, backoff_delay, retry_decision
from orchestrator.errors import (
    AuthError,
    ConflictError,
    IntegrityError,
    PermanentError,
    RateLimited,
    RetryableError,
)

POLICY = RetryPolicy(max_stage_retries=3, backoff_initial_s=2.0, backoff_max_s=300.0)


@pytest.mark.parametrize("step", [0, 1, 4, 8, 30, 10_000])
def test_backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half(step: int) -> None:
    ceiling = min(POLICY.backoff_max_s, POLICY.backoff_initial_s * 2 ** min(step, 30))
    rng = random.Random(step)
    delays = [backoff_delay(step, POLICY, rng) for _ in range(200)]
    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    assert max(delays) - min(delays) > ceiling / 4  # really jittered, not a constant


def test_a_rate_limit_waits_past_the_reset_and_uses_no_budget() -> None:
    verdict = retry_decision(RateLimited("429", retry_after=40.0), counted_so_far=3,
                             waits_so_far=50, policy=POLICY, rng=random.Random(1))
    assert isinstance(verdict, RetryAt) and not verdict.counted
    assert 40.5 <= verdict.delay_s <= 43.0


def test_a_rate_limit_without_a_reset_waits_the_longest_backoff() -> None:
    verdict = retry_decision(RateLimited("429"), counted_so_far=0, waits_so_far=0,
                             policy=POLICY, rng=random.Random(1))
    assert isinstance(verdict, RetryAt) and verdict.delay_s >= POLICY.backoff_max_s


def test_auth_trouble_waits_the_longest_backoff_uncounted() -> None:
    verdict = retry_decision(AuthError("401"), counted_so_far=3, waits_so_far=0,
                             policy=POLICY, rng=random.Random(1))
    assert verdict == RetryAt(POLICY.backoff_max_s, counted=False)


def test_conflicts_back_off_by_the_waits_so_far_without_counting() -> None:
    rng = random.Random(2)
    early = retry_decision(ConflictError("409"), counted_so_far=0, waits_so_far=0,
                           policy=POLICY, rng=rng)
    late = retry_decision(ConflictError("409"), counted_so_far=0, waits_so_far=20,
                          policy=POLICY, rng=rng)
    assert isinstance(early, RetryAt) and isinstance(late, RetryAt)
    assert not early.counted and not late.counted
    assert early.delay_s <= 2.0 and late.delay_s >= POLICY.backoff_max_s / 2


def test_the_servers_retry_after_is_a_floor_for_counted_retries() -> None:
    verdict = retry_decision(RetryableError("503", retry_after=120.0), counted_so_far=0,
                             waits_so_far=0, policy=POLICY, rng=random.Random(1))
    assert verdict == RetryAt(120.0, counted=True)


def test_a_corrupt_download_is_retried_forever_and_escalates_once() -> None:
    """The outage model: a transient failure is never a give-up; the max_stage_retries-th in
    a row only turns the retry line into an incident (once)."""
    rng = random.Random(1)
    verdicts = [retry_decision(IntegrityError("crc32c"), counted_so_far=n, waits_so_far=0,
                               policy=POLICY, rng=rng) for n in range(50)]
    assert all(isinstance(v, RetryAt) and v.counted for v in verdicts)
    assert [n for n, v in enumerate(verdicts) if isinstance(v, RetryAt) and v.escalate] == [
        POLICY.max_stage_retries - 1]
    assert all(v.delay_s <= POLICY.backoff_max_s for v in verdicts if isinstance(v, RetryAt))


def test_a_permanent_answer_gives_up() -> None:
    verdict = retry_decision(PermanentError("400 invalid request"), counted_so_far=0,
                             waits_so_far=0, policy=POLICY, rng=random.Random(1))
    assert verdict == GiveUp("PermanentError")
