"""What a transition writes (core/decision.py): a new attempt starts from a clean remote
slate, a new stage from fresh counters. Pure."""

from __future__ import annotations

import dataclasses

from orchestrator.core.decision import CLEAR_REMOTE, Decision, RemoteOutcome, fresh_stage
from orchestrator.core.model import Batch, BatchState

# What X told us about one remote job: everything a new attempt must forget.
REMOTE_PREFIXES = ("x_", "upload_url", "upload_expires", "upload_session", "download_")


def batch_defaults() -> dict[str, object]:
    return {f.name: f.default for f in dataclasses.fields(Batch)
            if f.default is not dataclasses.MISSING}


def test_clear_remote_forgets_every_remote_column_and_nothing_else() -> None:
    defaults = batch_defaults()
    remote = {name for name in defaults if name.startswith(REMOTE_PREFIXES)}
    assert remote <= set(CLEAR_REMOTE)
    # Each is reset to what a batch that never had a remote job holds.
    assert {name: defaults[name] for name in CLEAR_REMOTE} == dict(CLEAR_REMOTE)
    # Not the batch's own history: attempts, the upload body, the counters of the stage.
    assert not {"attempt", "upload_name", "upload_bytes", "id_count", "key"} & set(CLEAR_REMOTE)


def test_fresh_stage_resets_the_counters_and_the_wait() -> None:
    assert fresh_stage() == {"stage_retries": 0, "stage_waits": 0, "next_attempt_at": None}
    first = fresh_stage()
    first["stage_retries"] = 5
    assert fresh_stage()["stage_retries"] == 0  # a new dict each time, never shared


def test_a_plain_decision_changes_only_the_state() -> None:
    decision = Decision(BatchState.WAITING, "batch.uploaded")
    assert dict(decision.changes) == {} and dict(decision.guard) == {}
    assert decision.level == "info" and not decision.pause
    assert decision.reject_reason is None and decision.remote_outcome is None
    assert RemoteOutcome("failed").replace and RemoteOutcome("failed").error is None
