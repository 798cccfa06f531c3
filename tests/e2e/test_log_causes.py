"""Logs say why, and a file's story can be followed (issue 10, item 13): warning lines carry
the cause (exception class, redacted message, path), the stage, the files and input ids of
the batch; an incident ends with one `<stage>.recovered` line. Rendered by the production
JSON chain."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from daemon_helpers import (
    TOKEN,
    drop,
    load,
    make_ids,
    outcome,
    running_service,
    wait_for,
    write_config,
)
from resilience_helpers import tap_logs

from orchestrator.sandbox import Sandbox


def _of(records: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [r for r in records if r.get("event") == event]


async def test_a_packed_batch_through_faults_tells_its_story(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config = load(write_config(tmp_path, sandbox.base_url, max_stage_retries=1000,
                               pack_wait_s=1.0))
    outbox = tmp_path / "outbox" / "tweets"
    with tap_logs() as tap:
        async with running_service(config):
            sandbox.faults.add("create", "503", count=3)
            shutil.rmtree(outbox)
            outbox.write_text("in the way")  # the outbox cannot take the results yet
            drop(tmp_path, "tweets", "first.txt", make_ids(11, 40))
            drop(tmp_path, "tweets", "second.txt", make_ids(12, 40))
            await wait_for(lambda: bool(tap.events("outbox.write_failed")),
                           what="a failed delivery")
            outbox.unlink()
            outbox.mkdir()
            await wait_for(lambda: outcome(tmp_path, "tweets", "first.txt") == "delivered"
                           and outcome(tmp_path, "tweets", "second.txt") == "delivered",
                           what="both deliveries")
            await wait_for(lambda: bool(tap.events("job.finished")), what="job.finished")
        records = tap.daemon_records()
    assert TOKEN not in tap.text

    packed = _of(records, "batch.packed")
    assert len(packed) == 1
    names, ids = packed[0]["files"], packed[0]["input_ids"]
    assert sorted(names) == ["first.txt", "second.txt"] and len(ids) == 2
    assert packed[0]["inputs"] == 2

    # Every line of the batch's life names its files and inputs.
    for event in ("job.created", "job.finished", "step.retry", "outbox.write_failed",
                  "creating.recovered", "delivering.recovered"):
        lines = _of(records, event)
        assert lines, event
        for line in lines:
            assert line["files"] == names and line["input_ids"] == ids, (event, line)
    assert [r for r in records if str(r.get("event", "")).startswith("upload.")
            and r.get("files") == names]

    # The cause, not only its class.
    retries = _of(records, "step.retry")
    assert len(retries) == 3
    for line in retries:
        assert line["level"] == "warning" and line["stage"] == "creating"
        assert line["error"] == "RetryableError" and line["http_status"] == 503
        assert "HTTP 503" in line["error_msg"] and line["endpoint"] == "create"
        assert 0 <= line["retry_in_s"] <= 0.5  # backoff_max_s of the test config

    failed = _of(records, "outbox.write_failed")[0]
    assert failed["level"] == "warning" and failed["stage"] == "delivering"
    assert failed["error"] in ("FileExistsError", "NotADirectoryError")
    assert failed["error_msg"] and str(outbox) in failed["path"]
    assert 0 <= failed["retry_in_s"] <= 0.5

    # One line ends each incident, with its length and its failure count.
    recovered = _of(records, "creating.recovered")
    assert len(recovered) == 1 and recovered[0]["level"] == "info"
    assert recovered[0]["failures"] == 3 and recovered[0]["incident_s"] > 0
    assert recovered[0]["last_error"] == "RetryableError"
    delivering = _of(records, "delivering.recovered")
    assert len(delivering) == 1
    assert delivering[0]["failures"] == len(_of(records, "outbox.write_failed"))
