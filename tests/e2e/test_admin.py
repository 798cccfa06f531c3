"""Operator commands against the real daemon and the sandbox on 127.0.0.1.

The daemon runs in this event loop; each command runs in a worker thread through
`orchestrator.cli.main.main`, exactly as an operator's shell would call it, while the daemon keeps
working. `jobs` is read-only and checked on the history these runs leave behind.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from admin_helpers import (
    MaxRandom,
    Run,
    arun_cli,
    assert_no_secrets,
    batch_row,
    daemon,
    db,
    slow_backoff_config,
)
from daemon_helpers import (
    drained,
    drop,
    load,
    make_ids,
    outcome,
    read_results,
    wait_for,
    write_config,
)

from orchestrator.cli import common as admin_common
from orchestrator.logs import configure_logging, reset_logging
from orchestrator.sandbox import Sandbox


@pytest.fixture
def daemon_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The daemon's log lines. The commands run in this process, so they must not move the
    logging set-up to their own stderr (which they do, correctly, in a process of their own:
    see the console-script smoke test)."""
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    monkeypatch.setattr(admin_common, "quiet_logging", lambda: None)
    yield stream
    reset_logging()


def delivered(workdir: Path, job_type: str, stem: str) -> bool:
    """The results are out and the batch is recorded as done (the manifest comes first)."""
    unfinished = db(workdir, "SELECT id FROM batches WHERE state NOT IN"
                    " ('done', 'failed', 'cancelled')")
    return (workdir / "outbox" / job_type / f"{stem}.manifest.json").exists() and not unfinished


def events(workdir: Path, kind: str) -> list[dict[str, Any]]:
    return db(workdir, "SELECT * FROM events WHERE kind = ? ORDER BY id", (kind,))


async def test_cancel_a_queued_batch_while_the_daemon_runs_then_requeue_it(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str],
    daemon_log: io.StringIO,
) -> None:
    config = load(slow_backoff_config(tmp_path, sandbox.base_url))
    sandbox.faults.fail_next_jobs(1, error="Internal error")
    ids = make_ids(21, 60)
    outputs: list[Run] = []
    async with daemon(config, rng=MaxRandom()):
        drop(tmp_path, "tweets", "cancel-me.txt", ids)
        # The remote job failed: the batch is queued again, waiting a minute for attempt 2.
        await wait_for(lambda: batch_row(tmp_path).get("state") == "queued"
                       and batch_row(tmp_path).get("attempt") == 1, what="batch back in queue")
        key = batch_row(tmp_path)["key"]

        run = await arun_cli(capsys, "migrate", "--config", config.source)
        assert run.code == 2 and "refusing to migrate while the daemon runs" in run.err

        run = await arun_cli(capsys, "cancel", "1", "--config", config.source, "--json")
        outputs.append(run)
        assert run.code == 0, run.err
        assert run.json["from_state"] == "queued" and run.json["daemon_pid"]
        assert [r["rejected_as"] for r in run.json["rejected"]] == ["cancel-me.txt"]
        record = json.loads((tmp_path / "outbox/rejected/cancel-me.txt.error.json").read_text())
        assert record["reason"] == "cancelled" and record["job_type"] == "tweets"

        run = await arun_cli(capsys, "requeue", "cancel-me.txt", "--config", config.source)
        outputs.append(run)
        assert run.code == 0, run.err
        assert "running daemon" in run.out
        # Claimed like a new file; its old output name is taken by the cancelled input.
        await wait_for(lambda: delivered(tmp_path, "tweets", "cancel-me"),
                       what="the requeued file delivered")

        run = await arun_cli(capsys, "jobs", "--config", config.source, "--json")
        outputs.append(run)
    assert read_results(tmp_path, "tweets", "cancel-me") == sandbox.expected_results(
        "tweets", ids)
    assert f"{key}-2" not in [job.get("name") for job in sandbox.jobs()]  # never retried
    assert batch_row(tmp_path, 1)["state"] == "cancelled"
    assert not (tmp_path / "outbox/rejected/cancel-me.txt").exists()

    history = {job["batch_id"]: job for job in outputs[-1].json["jobs"]}
    assert history[1]["outcome"] == "cancelled"
    assert (history[1]["reason"], history[1]["message"]) == ("cancelled", "cancelled by operator")
    assert [r["status"] for r in history[1]["remote_jobs"]] == ["failed"]
    assert history[2]["outcome"] == "done" and history[2]["files"] == ["cancel-me.txt"]
    assert history[2]["affected"] == len(sandbox.expected_results("tweets", ids))
    assert_no_secrets(*(r.out + r.err for r in outputs))


async def test_retry_ends_a_backoff_and_the_daemon_goes_on_at_once(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str],
    daemon_log: io.StringIO,
) -> None:
    config = load(slow_backoff_config(tmp_path, sandbox.base_url))
    sandbox.faults.add("create", "503", count=1)
    ids = make_ids(22, 40)
    async with daemon(config, rng=MaxRandom()):
        drop(tmp_path, "users", "later.txt", ids)
        await wait_for(lambda: batch_row(tmp_path).get("stage_retries") == 1,
                       what="the create call backing off")
        row = batch_row(tmp_path)
        assert row["state"] == "creating"
        assert (datetime.fromisoformat(row["next_attempt_at"])
                - datetime.now(UTC)).total_seconds() > 30  # it would wait a minute

        run = await arun_cli(capsys, "retry", "1", "--config", config.source)
        assert run.code == 0, run.err
        assert "backing off until" in run.out and "503" in run.out
        assert "running daemon" in run.out
        # The lane sleeps at most 5 s at a time and re-reads the database.
        await wait_for(lambda: delivered(tmp_path, "users", "later"), timeout=20,
                       what="delivery right after the retry")
    assert read_results(tmp_path, "users", "later") == sandbox.expected_results("users", ids)
    assert len(events(tmp_path, "operator.retry")) == 1


async def test_retry_of_a_failed_batch_sends_its_inputs_round_again(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str],
    daemon_log: io.StringIO,
) -> None:
    config = load(write_config(tmp_path, sandbox.base_url, max_attempts=1))
    sandbox.faults.fail_next_jobs(1, error="Unable to process file")
    ids = make_ids(23, 30)
    async with daemon(config) as service:
        drop(tmp_path, "tweets", "doomed.txt", ids)
        await drained(service)
        assert outcome(tmp_path, "tweets", "doomed.txt") == "rejected", "the batch giving up"
        await wait_for(lambda: (tmp_path / "outbox/rejected/doomed.txt").exists())

        run = await arun_cli(capsys, "retry", "1", "--config", config.source, "--json")
        assert run.code == 0, run.err
        assert run.json["action"] == "requeue"
        assert [r["file"] for r in run.json["requeued"]] == ["doomed.txt"]
        assert run.json["requeued"][0]["to"] == str(tmp_path / "inbox/tweets/doomed.txt")
        await wait_for(lambda: delivered(tmp_path, "tweets", "doomed"),
                       what="the requeued input delivered")

        run = await arun_cli(capsys, "retry", "1", "--config", config.source)
        assert run.code == 1
        assert "no longer in outbox/rejected/" in run.err

        human = await arun_cli(capsys, "jobs", "--config", config.source)
        limited = await arun_cli(capsys, "jobs", "--limit", "1", "--config", config.source,
                                 "--json")
    assert read_results(tmp_path, "tweets", "doomed") == sandbox.expected_results(
        "tweets", ids)
    assert not (tmp_path / "outbox/rejected/doomed.txt.error.json").exists()

    assert human.code == 0, human.err
    header, first, second, *rest = human.out.splitlines()[1:]
    assert header.split()[:3] == ["BATCH", "TYPE", "OUTCOME"]
    assert first.split()[:3] == ["2", "tweets", "done"]
    assert "doomed.txt" in first
    assert second.split()[:3] == ["1", "tweets", "failed"]
    assert "gave up" in rest[0] and "Unable to process file" in rest[0]

    assert limited.code == 0
    report = limited.json
    assert report["total"] == 2 and report["limit"] == 1
    (job,) = report["jobs"]
    assert set(job) >= {"batch_id", "job_type", "outcome", "state", "started_at",
                        "finished_at", "duration_s", "inputs", "files", "ids", "affected",
                        "attempts", "remote_jobs", "reason", "message"}
    assert job["batch_id"] == 2 and job["ids"] == 30 and job["inputs"] == 1
    assert job["attempts"] == 1 and job["duration_s"] >= 0
    assert job["remote_jobs"][0]["status"] == "complete"
    manifest = json.loads((tmp_path / "outbox/tweets/doomed.manifest.json").read_text())
    assert job["affected"] == manifest["counts"]["affected"]
    assert job["remote_jobs"][0]["x_job_id"] == manifest["jobs"][0]["x_job_id"]


async def test_force_cancel_of_a_waiting_batch_abandons_its_remote_job_plainly(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str],
    daemon_log: io.StringIO,
) -> None:
    config = load(write_config(tmp_path, sandbox.base_url))
    sandbox.configure(processing_time_s=3600)  # the remote job stays in_progress
    outputs: list[Run] = []
    async with daemon(config):
        drop(tmp_path, "tweets", "big.txt", make_ids(24, 50))
        await wait_for(lambda: batch_row(tmp_path).get("state") == "waiting",
                       what="the job being polled")
        x_job_id = batch_row(tmp_path)["x_job_id"]
        assert "X-Goog-Signature" in batch_row(tmp_path)["download_url"]  # secrets exist

        run = await arun_cli(capsys, "cancel", "1", "--config", config.source)
        outputs.append(run)
        assert run.code == 1
        assert f"remote job {x_job_id}" in run.err and "--force" in run.err

        # Catch the daemon in the middle of a poll: its next transition must find the batch
        # cancelled (compare-and-set), not overwrite the cancellation.
        sandbox.faults.add("get", "slow", count=1, delay=2.0)
        await wait_for(lambda: not sandbox.faults.pending(), what="a slow poll in flight")
        run = await arun_cli(capsys, "cancel", "1", "--force", "--config", config.source)
        outputs.append(run)
        assert run.code == 0, run.err
        assert f"X has no cancel endpoint: remote job {x_job_id} keeps running" in run.out
        assert "its results will not be downloaded" in run.out
        await wait_for(lambda: '"batch.stale"' in daemon_log.getvalue(),
                       what="the daemon's stale transition")

        # The abandoned job ends on X's side; the daemon then runs the next file normally.
        sandbox.configure(processing_time_s=0.2)
        sandbox.clock.advance(3600)
        drop(tmp_path, "tweets", "next.txt", make_ids(25, 20))
        await wait_for(lambda: delivered(tmp_path, "tweets", "next"), what="the next file")
        for command in (["jobs"], ["jobs", "--json"], ["status"], ["status", "--json"]):
            outputs.append(await arun_cli(capsys, *command, "--config", config.source))
    assert batch_row(tmp_path, 1)["state"] == "cancelled"
    downloads = [path for method, path, _status in sandbox.request_log
                 if method == "GET" and "/delivery/" in path]
    assert downloads and not [path for path in downloads if x_job_id in path]
    assert db(tmp_path, "SELECT final_status FROM remote_jobs WHERE x_job_id = ?",
              (x_job_id,)) == [{"final_status": "abandoned"}]
    record = json.loads((tmp_path / "outbox/rejected/big.txt.error.json").read_text())
    assert record["remote_job_left_running"] == x_job_id
    assert not [p for p in (tmp_path / "state/spool").iterdir() if p.name.startswith("batch-1")]
    assert all(run.code == 0 for run in outputs[2:])
    assert_no_secrets(*(r.out + r.err for r in outputs))
