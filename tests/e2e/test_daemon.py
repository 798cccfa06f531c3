"""The daemon end to end against the sandbox on 127.0.0.1: inbox in, outbox out."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from daemon_helpers import (
    TOKEN,
    db_rows,
    drained,
    drop,
    load,
    make_ids,
    outcome,
    read_results,
    running_service,
    write_config,
)

from orchestrator.core.model import JobType
from orchestrator.logs import configure_logging, reset_logging
from orchestrator.sandbox import Sandbox


async def test_files_of_both_types_come_back_exactly_as_the_sandbox_says(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config = load(write_config(tmp_path, sandbox.base_url))
    tweets, users = make_ids(1, 400), make_ids(2, 250)
    async with running_service(config) as service:
        drop(tmp_path, "tweets", "batch one.txt", tweets)
        drop(tmp_path, "users", "users.csv", users)
        await drained(service)
        assert (
            outcome(tmp_path, "tweets", "batch one.txt") is not None
            and outcome(tmp_path, "users", "users.csv") is not None
            and not list((tmp_path / "state" / "spool").iterdir())
        ), "both results in the outbox and a clean spool"

    for job_type, stem, ids in ((JobType.TWEETS, "batch one", tweets),
                                (JobType.USERS, "users", users)):
        got = read_results(tmp_path, job_type, stem)
        expected = sandbox.expected_results(job_type, ids)
        assert got == expected
        manifest = json.loads(
            (tmp_path / "outbox" / str(job_type) / f"{stem}.manifest.json").read_text()
        )
        assert manifest["counts"]["submitted"] == len(ids)
        assert manifest["counts"]["affected"] == len(expected)
        by_reason: dict[str, int] = {}
        for row in expected.values():
            by_reason[row["reason"]] = by_reason.get(row["reason"], 0) + 1
        assert manifest["counts"]["by_reason"] == by_reason
        assert len(manifest["jobs"]) == 1 and manifest["jobs"][0]["status"] == "complete"
        assert len(manifest["input"]["sha256"]) == 64
        assert len(manifest["output"]["sha256"]) == 64
        # One timestamp format: RFC 3339 UTC with Z (milliseconds; X's own in whole seconds).
        stamps = [manifest["input"]["claimed_at"], manifest["jobs"][0]["created_at"],
                  *(v for k, v in manifest["timings"].items() if k.endswith("_at"))]
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z", t)
                   for t in stamps), stamps
        assert re.fullmatch(r".*:\d\dZ", manifest["timings"]["job_created_at"])
    # Inputs are released only after delivery: nothing left in the inbox or the spool.
    assert not list((tmp_path / "inbox" / "tweets").iterdir())
    assert not list((tmp_path / "state" / "spool").iterdir())


async def test_jobs_run_one_at_a_time_and_never_hit_the_conflict_rule(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config = load(write_config(tmp_path, sandbox.base_url, pack_files="false"))
    names = [f"file-{n}.txt" for n in range(4)]
    async with running_service(config) as service:
        for n, name in enumerate(names):
            drop(tmp_path, "tweets" if n % 2 else "users", name, make_ids(10 + n, 50))
        await drained(service)
        assert all(outcome(tmp_path, "tweets" if n % 2 else "users", name)
                   for n, name in enumerate(names)), "four results"
    statuses = [status for _method, _path, status in sandbox.request_log]
    assert 409 not in statuses
    assert len(sandbox.jobs()) == 4


async def test_a_file_with_a_bad_line_is_rejected_with_the_line_number(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config = load(write_config(tmp_path, sandbox.base_url))
    async with running_service(config) as service:
        drop(tmp_path, "tweets", "typo.txt", ["123", "456", "12x4", "789"])
        drop(tmp_path, "tweets", "empty.txt", [])
        await drained(service)
        assert (
            outcome(tmp_path, "tweets", "typo.txt") == "rejected"
            and outcome(tmp_path, "tweets", "empty.txt") == "rejected"
        ), "two rejections"
    rejected = tmp_path / "outbox" / "rejected"
    assert (rejected / "typo.txt").read_text() == "123\n456\n12x4\n789\n"  # untouched
    error = json.loads((rejected / "typo.txt.error.json").read_text())
    assert error["file"] == "typo.txt"
    assert error["bad_lines"][0]["line"] == 3
    assert "typo.txt" in error["message"]
    assert json.loads((rejected / "empty.txt.error.json").read_text())["reason"] == "empty"
    assert sandbox.jobs() == []


async def test_drop_policy_submits_the_good_lines_and_reports_the_bad(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config = load(write_config(tmp_path, sandbox.base_url, invalid_lines="drop"))
    ids = make_ids(5, 30)
    async with running_service(config) as service:
        drop(tmp_path, "users", "mixed.txt", [*ids[:10], "-5", *ids[10:]])
        await drained(service)
        assert outcome(tmp_path, "users", "mixed.txt") == "delivered"
    manifest = json.loads((tmp_path / "outbox" / "users" / "mixed.manifest.json").read_text())
    assert manifest["counts"]["submitted"] == 30
    assert manifest["input"]["dropped_lines"] == 1
    assert manifest["input"]["bad_lines"][0]["line"] == 11
    assert read_results(tmp_path, "users", "mixed") == sandbox.expected_results("users", ids)


async def test_same_name_twice_gets_two_result_sets(tmp_path: Path, sandbox: Sandbox) -> None:
    config = load(write_config(tmp_path, sandbox.base_url))
    first, second = make_ids(7, 20), make_ids(8, 20)
    async with running_service(config) as service:
        drop(tmp_path, "tweets", "daily.txt", first)
        await drained(service)
        assert outcome(tmp_path, "tweets", "daily.txt") == "delivered"
        drop(tmp_path, "tweets", "daily.txt", second)
        await drained(service)
        assert (tmp_path / "outbox/tweets/daily-2.manifest.json").exists()
    assert read_results(tmp_path, "tweets", "daily") == sandbox.expected_results("tweets", first)
    assert read_results(tmp_path, "tweets", "daily-2") == sandbox.expected_results(
        "tweets", second)


async def test_failed_remote_job_is_retried_with_a_new_job(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config = load(write_config(tmp_path, sandbox.base_url))
    sandbox.faults.fail_next_jobs(1, error="Internal processing error")
    ids = make_ids(3, 40)
    async with running_service(config) as service:
        drop(tmp_path, "tweets", "retry.txt", ids)
        await drained(service)
        assert outcome(tmp_path, "tweets", "retry.txt") == "delivered"
    manifest = json.loads((tmp_path / "outbox/tweets/retry.manifest.json").read_text())
    assert [job["status"] for job in manifest["jobs"]] == ["failed", "complete"]
    assert read_results(tmp_path, "tweets", "retry") == sandbox.expected_results("tweets", ids)


async def test_failing_jobs_end_in_rejected_with_the_api_error(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config = load(write_config(tmp_path, sandbox.base_url, max_attempts=2))
    sandbox.faults.fail_next_jobs(2, error="Unable to process file")
    async with running_service(config) as service:
        drop(tmp_path, "users", "doomed.txt", make_ids(4, 10))
        await drained(service)
        assert outcome(tmp_path, "users", "doomed.txt") == "rejected"
    error = json.loads((tmp_path / "outbox/rejected/doomed.txt.error.json").read_text())
    assert error["job_error"] == "Unable to process file"
    assert error["attempts"] == 2 and len(error["x_job_ids"]) == 2
    assert (tmp_path / "outbox/rejected/doomed.txt").exists()


async def test_logs_of_a_whole_run_never_show_the_token_or_a_signature(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream, secrets=(TOKEN,))
    try:
        config = load(write_config(tmp_path, sandbox.base_url))
        sandbox.faults.add("upload", "500", count=1)
        sandbox.faults.add("get", "503", count=1)
        async with running_service(config) as service:
            drop(tmp_path, "tweets", "secret-check.txt", make_ids(9, 30))
            await drained(service)
            assert outcome(tmp_path, "tweets", "secret-check.txt") is not None
    finally:
        reset_logging()
    text = stream.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    events = {line["event"] for line in lines}
    assert {"inbox.claimed", "job.created", "upload.completed", "download.completed",
            "outbox.delivered", "job.finished"} <= events
    assert TOKEN not in text
    assert "X-Goog-Signature" not in text and "Signature=" not in text
    assert "upload_id=" not in text
    status_db = db_rows(tmp_path, "SELECT last_error FROM batches")
    assert all(TOKEN not in str(row) and "Signature" not in str(row) for row in status_db)
