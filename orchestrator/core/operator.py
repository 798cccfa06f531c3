"""PURE: the transitions an operator's command asks for (`cancel`, `retry`), as Decisions the
store persists exactly like the daemon's own (compare-and-set, event row, input cascade), and
the maintenance pause (`pause`, `resume`) as guarded setting changes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from orchestrator.core.decision import Decision, RemoteOutcome
from orchestrator.core.model import Batch, BatchState

S = BatchState
CANCEL_REASON: Final = "cancelled by operator"  # the sentence (`message`)
CANCEL_CODE: Final = "cancelled"  # the reason code (error.json `reason`, like `gave_up`)
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


# ---- maintenance pause -----------------------------------------------------------------

PAUSE_KEY: Final = "pause"


@dataclass(frozen=True)
class SettingChange:
    """A change of one persisted operator setting, applied by Store.change_setting only if
    the row still reads as it did (`expected_since`: its `since`, None for absent)."""

    key: str
    value: Mapping[str, Any] | None  # None: delete the row
    event: str
    detail: Mapping[str, Any]
    expected_since: str | None


def pause(
    current: Mapping[str, Any] | None, now: datetime, *, by: str, reason: str | None
) -> SettingChange | None:
    """Hold new remote work (no new QUEUED -> CREATING) until `resume`. None when already
    paused: the first pause's time and reason stand."""
    if current is not None:
        return None
    since = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    value = {"since": since, "by": by, "reason": reason}
    return SettingChange(PAUSE_KEY, value, "operator.pause", value, expected_since=None)


def resume(current: Mapping[str, Any] | None) -> SettingChange | None:
    """Lift the pause. None when not paused."""
    if current is None:
        return None
    return SettingChange(
        PAUSE_KEY, None, "operator.resume", {"paused_since": current.get("since"),
                                             "paused_by": current.get("by")},
        expected_since=current.get("since"),
    )
