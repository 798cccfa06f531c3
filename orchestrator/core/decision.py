"""PURE: what a transition writes. The machine (daemon) and core.operator (operator commands)
make Decisions; the store persists one with a compare-and-set on the batch state."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from orchestrator.core.model import BatchState


@dataclass(frozen=True, slots=True)
class RemoteOutcome:
    """What to record about the batch's current remote job (in its history row)."""

    status: str                # last known status, or `abandoned` when we stopped tracking it
    error: str | None = None   # the job's own error text, when X gave one
    replace: bool = True       # False: keep a status/error recorded earlier, fill only blanks


@dataclass(frozen=True, slots=True)
class Decision:
    to_state: BatchState
    event: str
    changes: Mapping[str, Any] = field(default_factory=dict)
    level: str = "info"
    detail: Mapping[str, Any] = field(default_factory=dict)  # for the log and the event row
    reject_reason: str | None = None  # set when the inputs are rejected: why
    pause: bool = False               # credentials problem: the lane stops creating work
    remote_outcome: RemoteOutcome | None = None
    # Columns that must still hold these values, besides the state (compare-and-set).
    guard: Mapping[str, Any] = field(default_factory=dict)


CLEAR_REMOTE: Final[Mapping[str, Any]] = {
    "x_job_id": None, "x_job_name": None, "x_status": None, "x_created_at": None,
    "upload_url": None, "upload_expires_at": None, "download_url": None,
    "download_expires_at": None, "upload_session_url": None, "poll_count": 0,
    "uploaded_at": None, "completed_at": None, "resumable": False,
}


def fresh_stage() -> dict[str, Any]:
    return {"stage_retries": 0, "stage_waits": 0, "next_attempt_at": None}
