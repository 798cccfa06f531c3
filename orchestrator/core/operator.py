"""PURE: the transitions an operator's command asks for (`cancel`, `retry`), as Decisions the
store persists exactly like the daemon's own (compare-and-set, event row, input cascade)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

from orchestrator.core.decision import Decision, RemoteOutcome
from orchestrator.core.model import Batch, BatchState

S = BatchState
CANCEL_REASON: Final = "cancelled by operator"
# States in which a remote job exists (or its creation request may be on the wire): X has no
# endpoint to cancel one, so cancelling there only stops tracking it and needs --force.
REMOTE_STATES: Final = frozenset({S.CREATING, S.UPLOADING, S.WAITING, S.DOWNLOADING})


def cancel(batch: Batch, *, force: bool, files: Sequence[str]) -> Decision | None:
    """Cancel a queued batch (or, with `force`, one whose remote job exists): its inputs are
    rejected. None when the batch cannot be cancelled: it is final or delivering (it finishes
    by itself), or a remote job exists and `force` was not given."""
    remote = batch.state in REMOTE_STATES
    if not (batch.state is S.QUEUED or (remote and force)):
        return None
    return Decision(
        S.CANCELLED, "operator.cancel", {"next_attempt_at": None},
        detail={"forced": remote, "x_job_id": batch.x_job_id, "x_job_name": batch.x_job_name,
                "files": list(files)},
        reject_reason=CANCEL_REASON,
        # What X says about the job stays; otherwise the history says we let it go.
        remote_outcome=(RemoteOutcome("abandoned", CANCEL_REASON, replace=False)
                        if remote and batch.x_job_id else None),
    )


def clear_wait(batch: Batch, now: datetime, *, last_error: str | None) -> Decision | None:
    """Make a waiting batch's next step due now, with fresh stage counters. None when it does
    not wait (final, or its step is due already). `last_error`: the (redacted) text to note.
    Guarded by the due time as read, so a step the daemon took meanwhile is not undone."""
    due = batch.next_attempt_at
    if batch.state.is_final or due is None or due <= now:
        return None
    return Decision(
        batch.state, "operator.retry",
        {"next_attempt_at": None, "stage_retries": 0, "stage_waits": 0},
        detail={"action": "retry_now",
                "was_due_at": due.astimezone(UTC).isoformat(timespec="microseconds"),
                "stage_retries": batch.stage_retries, "stage_waits": batch.stage_waits,
                "last_error": last_error},
        guard={"next_attempt_at": due},
    )
