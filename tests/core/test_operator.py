"""Operator decisions (core.operator): `cancel` and `retry`'s clear-the-wait, pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.core import operator
from orchestrator.core.decision import RemoteOutcome
from orchestrator.core.machine import ALLOWED
from orchestrator.core.model import Batch, BatchState, JobType

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
S = BatchState


def batch(state: BatchState, **fields: object) -> Batch:
    return Batch(id=3, key="co-abc", job_type=JobType.TWEETS, state=state, **fields)  # type: ignore[arg-type]


def test_a_queued_batch_is_cancelled_without_force() -> None:
    decision = operator.cancel(batch(S.QUEUED), force=False, files=["a.txt"])
    assert decision is not None and decision.to_state is S.CANCELLED
    assert decision.event == "operator.cancel"
    assert decision.detail == {"forced": False, "x_job_id": None, "x_job_name": None,
                               "files": ["a.txt"]}
    assert decision.reject_reason == operator.CANCEL_REASON
    assert decision.remote_outcome is None


@pytest.mark.parametrize("state", sorted(operator.REMOTE_STATES))
def test_a_remote_job_needs_force(state: BatchState) -> None:
    held = batch(state, x_job_id="99", x_job_name="co-abc-1")
    assert operator.cancel(held, force=False, files=[]) is None
    decision = operator.cancel(held, force=True, files=[])
    assert decision is not None and decision.detail["forced"] is True
    assert decision.to_state in ALLOWED[state]
    # The history keeps what X said about the job; only blanks become "abandoned".
    assert decision.remote_outcome == RemoteOutcome(
        "abandoned", operator.CANCEL_REASON, replace=False)


@pytest.mark.parametrize("state", [S.DELIVERING, S.DONE, S.FAILED, S.CANCELLED])
def test_delivering_and_final_batches_cannot_be_cancelled(state: BatchState) -> None:
    assert operator.cancel(batch(state), force=True, files=[]) is None


def test_clear_wait_makes_the_step_due_and_is_guarded_by_the_due_time() -> None:
    due = NOW + timedelta(minutes=5)
    waiting = batch(S.WAITING, next_attempt_at=due, stage_retries=2, stage_waits=1)
    decision = operator.clear_wait(waiting, NOW, last_error="Timeout: slow")
    assert decision is not None and decision.to_state is S.WAITING
    assert decision.to_state in ALLOWED[S.WAITING]
    assert decision.changes == {"next_attempt_at": None, "stage_retries": 0, "stage_waits": 0}
    assert decision.guard == {"next_attempt_at": due}
    assert decision.detail == {
        "action": "retry_now", "was_due_at": "2026-01-01T12:05:00.000000+00:00",
        "stage_retries": 2, "stage_waits": 1, "last_error": "Timeout: slow",
    }


def test_clear_wait_on_a_queued_batch_is_an_allowed_transition() -> None:
    queued = batch(S.QUEUED, attempt=1, next_attempt_at=NOW + timedelta(seconds=30))
    decision = operator.clear_wait(queued, NOW, last_error=None)
    assert decision is not None and decision.to_state in ALLOWED[S.QUEUED]


@pytest.mark.parametrize(("state", "due"), [
    (S.WAITING, None), (S.WAITING, NOW), (S.WAITING, NOW - timedelta(seconds=1)),
    (S.DONE, NOW + timedelta(minutes=1)), (S.FAILED, NOW + timedelta(minutes=1)),
])
def test_nothing_to_clear(state: BatchState, due: datetime | None) -> None:
    assert operator.clear_wait(batch(state, next_attempt_at=due), NOW, last_error=None) is None
