"""The domain model (core/model.py): the API's timestamps, remote jobs as X reports them,
final states, and the names derived from a batch and an input. Pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from orchestrator.core.model import (
    Batch,
    BatchState,
    InputFile,
    InputState,
    JobType,
    RemoteJob,
    RemoteStatus,
    format_timestamp,
    parse_timestamp,
)

JOB: dict[str, Any] = {  # a job object as recorded from the API (docs/x-compliance-api.md)
    "id": "1449876127954493440", "type": "tweets", "status": "created",
    "created_at": "2021-10-17T23:13:07.000Z",
    "upload_url": "https://storage.googleapis.com/twttr-tweet-compliance/x?X-Goog-Signature=s",
    "upload_expires_at": "2021-10-17T23:28:07.000Z",
    "download_url": "https://storage.googleapis.com/twttr-tweet-compliance/y?X-Goog-Signature=s",
    "download_expires_at": "2021-10-24T23:13:07.000Z",
    "resumable": False, "name": "batch-7-1",
}


@pytest.mark.parametrize(("text", "expected"), [
    ("2021-10-07T07:41:18.000Z", datetime(2021, 10, 7, 7, 41, 18, tzinfo=UTC)),
    ("2019-03-02T03:37:59+00:00", datetime(2019, 3, 2, 3, 37, 59, tzinfo=UTC)),
    (" 2019-03-02T03:37:59z ", datetime(2019, 3, 2, 3, 37, 59, tzinfo=UTC)),
    ("2019-03-02T05:37:59+02:00", datetime(2019, 3, 2, 3, 37, 59, tzinfo=UTC)),
    ("2019-03-02T03:37:59", datetime(2019, 3, 2, 3, 37, 59, tzinfo=UTC)),  # naive = UTC
])
def test_both_timestamp_styles_of_the_api_parse_to_utc(text: str, expected: datetime) -> None:
    parsed = parse_timestamp(text)
    assert parsed == expected and parsed.tzinfo == UTC


def test_timestamps_are_written_the_way_the_api_writes_them() -> None:
    moment = datetime(2021, 10, 7, 9, 41, 18, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert format_timestamp(moment) == "2021-10-07T07:41:18.123Z"
    assert parse_timestamp(format_timestamp(moment)) == moment.replace(microsecond=123000)


def test_a_job_response_becomes_a_remote_job() -> None:
    job = RemoteJob.from_api(JOB)
    assert job.id == JOB["id"] and job.type is JobType.TWEETS
    assert job.status is RemoteStatus.CREATED
    assert job.upload_expires_at - job.created_at == timedelta(minutes=15)
    assert job.name == "batch-7-1" and job.error is None and job.resumable is False


def test_an_unknown_status_is_kept_as_text_not_refused() -> None:
    job = RemoteJob.from_api({**JOB, "status": "archived"})
    assert job.status == "archived" and not isinstance(job.status, RemoteStatus)


@pytest.mark.parametrize("broken", [
    {k: v for k, v in JOB.items() if k != "upload_url"},
    {**JOB, "type": "spaces"},
    {**JOB, "created_at": "yesterday"},
])
def test_a_malformed_job_is_a_key_or_value_error(broken: dict[str, Any]) -> None:
    with pytest.raises((KeyError, ValueError)):
        RemoteJob.from_api(broken)


def test_only_done_failed_and_cancelled_batches_are_final() -> None:
    assert {s for s in BatchState if s.is_final} == {
        BatchState.DONE, BatchState.FAILED, BatchState.CANCELLED}


def test_only_delivered_and_rejected_inputs_are_final() -> None:
    assert {s for s in InputState if s.is_final} == {InputState.DELIVERED, InputState.REJECTED}


def test_each_attempt_has_its_own_remote_name_and_an_input_its_upload_body() -> None:
    batch = Batch(id=7, key="batch-7", job_type=JobType.USERS, state=BatchState.QUEUED)
    assert [batch.remote_name(n) for n in (1, 2)] == ["batch-7-1", "batch-7-2"]
    item = InputFile(id=1, job_type=JobType.USERS, name="a.txt", out_stem="a",
                     state=InputState.QUEUED, spool_name="0123456789abcdef.users", inode=1,
                     size_bytes=10)
    assert item.ids_name == "0123456789abcdef.users.ids"
