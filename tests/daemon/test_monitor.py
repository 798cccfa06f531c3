"""One lane's part of the status line and the queue's (daemon/monitor.py, pure); the whole
line and its delivery to systemd are in test_systemd.py."""

from __future__ import annotations

import pytest

from orchestrator.core.model import Batch, BatchState, JobType
from orchestrator.daemon.activity import Transfer
from orchestrator.daemon.monitor import describe_batch, queue_text

S = BatchState


def batch(state: BatchState, **fields: object) -> Batch:
    values: dict[str, object] = {"id": 12, "key": "batch-12", "job_type": JobType.TWEETS,
                                 "state": state, "x_job_id": "1446", "id_count": 5000}
    values.update(fields)
    return Batch(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(("state", "fields", "text"), [
    (S.QUEUED, {}, "starting"),
    (S.QUEUED, {"attempt": 1}, "starting attempt 2 with a new job"),
    (S.CREATING, {"attempt": 2}, "creating job (attempt 2)"),
    (S.UPLOADING, {}, "uploading 5000 IDs to job 1446"),
    (S.WAITING, {"poll_count": 3}, "waiting for job 1446 (poll 3)"),
    (S.DOWNLOADING, {}, "downloading results of job 1446"),
    (S.DELIVERING, {}, "delivering results of job 1446"),
    (S.WAITING, {"poll_count": 3, "stage_retries": 2}, "waiting for job 1446 (poll 3), retry 2"),
])
def test_each_stage_reads_as_what_the_lane_is_doing(
    state: BatchState, fields: dict[str, object], text: str
) -> None:
    assert describe_batch(batch(state, **fields)) == f"tweets batch 12: {text}"


def test_a_transfer_shows_its_progress_known_total_or_not() -> None:
    uploading = batch(S.UPLOADING)
    assert describe_batch(uploading, Transfer("upload", 3 << 20, 12 << 20)).endswith(
        "(25%, 3.0/12.0 MiB)")
    assert describe_batch(batch(S.DOWNLOADING), Transfer("download", 5 << 19, -1)).endswith(
        "(2.5 MiB)")


def test_the_queue_is_counted_per_type_and_silent_when_empty() -> None:
    assert queue_text({}) == "" and queue_text({"tweets": 0}) == ""
    assert queue_text({"users": 1, "tweets": 3}) == "4 queued (tweets 3, users 1)"
    assert queue_text({"users": 2, "tweets": 0}) == "2 queued (users 2)"
