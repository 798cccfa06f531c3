"""The poll schedule: expected ends from history, and where the status requests go."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.core import machine
from orchestrator.core.machine import Policy
from orchestrator.core.model import Batch, BatchState, RemoteJob, RemoteStatus
from orchestrator.core.polling import (
    Estimate,
    Sample,
    estimate,
    next_poll_s,
    planned_polls,
    poll_interval,
)
from orchestrator.core.ratelimit import RateBudget

POLICY = Policy()  # the shipped defaults: 5 s first, x1.5, 60 s cap, 6.43 s rate spacing
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def exact(seconds: float) -> Estimate:
    return Estimate(expected_s=seconds, early_s=seconds, samples=5)


@pytest.mark.parametrize(
    ("history", "ids", "expected_s", "early_s"),
    [
        # One size: its median; a smaller job proportionally less, a larger one not more.
        ([Sample(100, 10), Sample(100, 12), Sample(100, 8)], 100, 10.0, 8.0),
        ([Sample(1000, 60)] * 3, 500, 30.0, 30.0),
        ([Sample(1000, 60)] * 3, 5000, 60.0, 60.0),
        # An outlier (an outage while waiting) does not move the median...
        ([Sample(100, 10)] * 4 + [Sample(100, 1000)], 100, 10.0, 10.0),
        # ... and a faster job pulls the window's start (early) forward, not the estimate.
        ([Sample(100, 10)] * 4 + [Sample(100, 5)], 100, 10.0, 5.0),
        # Sizes that differ: a line with an intercept (11 s + 10 ms per ID).
        ([Sample(100, 12), Sample(1000, 21), Sample(10_000, 111)], 5000, 61.0, 61.0),
        # A line fitted through noise never goes below zero.
        ([Sample(10, 50), Sample(1000, 5)], 2000, 27.5, 5.0),
    ],
)
def test_estimate_from_history(
    history: list[Sample], ids: int, expected_s: float, early_s: float
) -> None:
    est = estimate(history, ids)
    assert est is not None
    assert est.expected_s == pytest.approx(expected_s)
    assert est.early_s == pytest.approx(early_s)


def test_no_history_no_estimate_and_only_the_newest_jobs_count() -> None:
    assert estimate([], 100) is None
    newest_first = [Sample(100, 20)] * 20 + [Sample(100, 1)] * 100
    est = estimate(newest_first, 100)
    assert est is not None and est.expected_s == 20 and est.samples == 20


def test_without_history_the_schedule_is_the_plain_one() -> None:
    assert next_poll_s(0.0, 0, POLICY) == POLICY.poll_initial_s
    for polls, age in [(1, 5.0), (3, 30.0), (9, 200.0), (40, 5000.0)]:
        assert next_poll_s(age, polls, POLICY) == poll_interval(polls, POLICY, age)
    assert [round(a, 2) for a in planned_polls(10, POLICY)] == [5.0, 11.43]


@pytest.mark.parametrize(
    ("duration_s", "plain_polls", "model_polls", "model_late_s"),
    [
        # job length, status requests without / with an exact estimate, lateness with it
        (10, 2, 1, 0.0),
        (60, 10, 7, 0.0),
        (600, 34, 19, 0.0),
        (3600, 84, 27, 0.0),
    ],
)
def test_an_exact_estimate_costs_fewer_polls_and_sees_the_end_at_once(
    duration_s: float, plain_polls: int, model_polls: int, model_late_s: float
) -> None:
    assert len(planned_polls(duration_s, POLICY)) == plain_polls
    ages = planned_polls(duration_s, POLICY, exact(duration_s))
    assert len(ages) == model_polls
    assert ages[-1] - duration_s == pytest.approx(model_late_s, abs=1e-6)


@pytest.mark.parametrize("expected_s", [10.0, 60.0, 600.0, 3600.0])
def test_polls_are_never_closer_than_the_rate_spacing_except_onto_a_planned_instant(
    expected_s: float,
) -> None:
    # A job 3x slower than expected: the whole schedule, far, dense and overdue.
    ages = planned_polls(3 * expected_s, POLICY, exact(expected_s))
    gaps = [b - a for a, b in zip([0.0, *ages], ages, strict=False)]
    short = [(a, g) for a, g in zip(ages, gaps, strict=True)
             if g < POLICY.poll_min_spacing_s - 1e-9]
    # Only the poll landing exactly on the expected end may come sooner.
    assert all(abs(a - expected_s) < 1e-6 for a, _ in short), short
    # And jobs like this back to back (each holding the slot until it is seen complete)
    # stay within the budget of a window (150 - the reserve of 10).
    assert len(ages) * 900 / ages[-1] <= 140


@pytest.mark.parametrize("expected_s", [60.0, 600.0, 3600.0])
def test_a_wrong_estimate_costs_bounded_lateness(expected_s: float) -> None:
    est = exact(expected_s)
    for duration in [d * expected_s / 97 for d in range(1, 300)]:
        late = planned_polls(duration, POLICY, est)[-1] - duration
        # Ends much earlier than estimated: noticed within about half its age (the sparse
        # steps, the first ones up to twice the rate spacing); later: the overdue schedule,
        # never worse than the plain one's 10% of the age or 60 s.
        if duration < expected_s:
            limit = max(0.5 * duration, 2 * POLICY.poll_min_spacing_s)
        else:
            limit = max(0.1 * duration, 60.0, POLICY.poll_min_spacing_s)
        assert late <= limit + 1e-6, (duration, late)


def test_time_scaling_with_the_budget_spacing_gives_the_same_schedule() -> None:
    # The emulator's rate window divided by k: X's headers give a spacing k times shorter,
    # which is what the bench relies on to time-scale long jobs honestly.
    k = 20.0
    scaled = Policy(poll_initial_s=5 / k, poll_max_s=60 / k)
    budget = RateBudget()
    budget.update("get", {"x-rate-limit-limit": "150", "x-rate-limit-remaining": "150",
                          "x-rate-limit-reset": str(int(1000 + 900 / k))}, now=1000.0)
    spacing = budget.spacing("get", 1000.0, reserve=10)
    assert spacing == pytest.approx(POLICY.poll_min_spacing_s / k)
    for est in (None, exact(600.0)):
        real = planned_polls(600.0, POLICY, est)
        small = planned_polls(600.0 / k, scaled,
                              None if est is None else exact(600.0 / k), spacing)
        assert [a * k for a in small] == pytest.approx(real)


def waiting_batch(**changes: object) -> Batch:
    fields: dict[str, object] = dict(
        id=1, key="k", job_type="tweets", state=BatchState.WAITING, upload_name="u",
        id_count=100, x_job_id="j1", uploaded_at=NOW - timedelta(seconds=30), poll_count=3,
        created_at=NOW, updated_at=NOW,
    )
    fields.update(changes)
    return Batch(**fields)  # type: ignore[arg-type]


def in_progress() -> RemoteJob:
    return RemoteJob(
        id="j1", type="tweets", status=RemoteStatus.IN_PROGRESS, created_at=NOW,
        upload_url="https://up.example/u", upload_expires_at=NOW + timedelta(minutes=15),
        download_url="https://down.example/d", download_expires_at=NOW + timedelta(days=7),
    )


def test_the_first_poll_after_an_upload_goes_to_the_expected_end() -> None:
    import random

    uploading = waiting_batch(state=BatchState.UPLOADING, uploaded_at=None, poll_count=0)
    plain = machine.decide(uploading, machine.UploadFinished(), NOW, POLICY, random.Random(1))
    assert plain.changes["next_attempt_at"] == NOW + timedelta(seconds=5)
    known = machine.decide(uploading, machine.UploadFinished(exact(11.4)), NOW, POLICY,
                           random.Random(1))
    assert known.changes["next_attempt_at"] == NOW + timedelta(seconds=11.4)
    assert known.detail["expected_s"] == 11.4


def test_a_pending_poll_uses_the_estimate_and_the_budget_spacing() -> None:
    import random

    batch = waiting_batch()  # 30 s after its upload, 3 polls so far
    plain = machine.decide(batch, machine.Polled(in_progress()), NOW, POLICY, random.Random(1))
    assert plain.changes["next_attempt_at"] - NOW == timedelta(seconds=poll_interval(4, POLICY, 30))
    # Expected at 40 s: the next poll lands there, not 6.4 s later.
    near = machine.decide(batch, machine.Polled(in_progress(), exact(40.0)), NOW, POLICY,
                          random.Random(1))
    assert near.changes["next_attempt_at"] - NOW == timedelta(seconds=10)
    # Overdue and the window's budget nearly spent: the budget's spacing wins.
    late = machine.decide(batch, machine.Polled(in_progress(), exact(20.0), spacing_s=45.0),
                          NOW, POLICY, random.Random(1))
    assert late.changes["next_attempt_at"] - NOW == timedelta(seconds=45)


def test_completion_is_recorded_when_the_request_was_sent() -> None:
    import random

    done = RemoteJob(**{**{f: getattr(in_progress(), f) for f in RemoteJob.__slots__},
                        "status": RemoteStatus.COMPLETE})
    asked = NOW - timedelta(milliseconds=300)  # a slow answer must not lengthen the history
    decision = machine.decide(waiting_batch(), machine.Polled(done, asked_at=asked), NOW,
                              POLICY, random.Random(1))
    assert decision.changes["completed_at"] == asked
    plain = machine.decide(waiting_batch(), machine.Polled(done), NOW, POLICY, random.Random(1))
    assert plain.changes["completed_at"] == NOW
