"""`retry` on a state database left by the daemon (daemon stopped): clear a wait, or say why not.

The scenarios with the daemon running are in tests/e2e/test_admin.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from admin_helpers import arun_cli, batch_row, db, make_batch, offline_config, set_batch

from orchestrator.clock import iso
from orchestrator.logs import reset_logging


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    reset_logging()


def soon(seconds: float = 600) -> str:
    return iso(datetime.now(UTC) + timedelta(seconds=seconds)) or ""


def kinds(workdir: Path) -> list[str]:
    return [e["kind"] for e in db(workdir, "SELECT kind FROM events ORDER BY id")]


async def test_retry_clears_a_wait_and_resets_the_stage_counters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    batch_id = await make_batch(tmp_path, "r.txt")
    set_batch(tmp_path, batch_id, state="creating", attempt=1, stage_retries=3, stage_waits=2,
              next_attempt_at=soon(), last_error="RetryableError: HTTP 503 from POST /2/x")
    run = await arun_cli(capsys, "retry", batch_id, "--config", config)
    assert run.code == 0, run.err
    assert "backing off until" in run.out and "HTTP 503" in run.out
    assert "Cleared: the daemon is not running" in run.out
    row = batch_row(tmp_path, batch_id)
    assert (row["state"], row["next_attempt_at"], row["stage_retries"], row["stage_waits"]) == (
        "creating", None, 0, 0)
    event = db(tmp_path, "SELECT * FROM events WHERE kind = 'operator.retry'")[0]
    assert event["batch_id"] == batch_id
    assert json.loads(event["detail_json"])["stage_retries"] == 3

    # Nothing is waiting any more: a second retry explains itself and changes nothing.
    run = await arun_cli(capsys, "retry", batch_id, "--config", config, "--json")
    assert run.code == 1
    assert "not waiting" in run.json["error"] and run.json["state"] == "creating"


async def test_retry_after_an_auth_pause_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    batch_id = await make_batch(tmp_path, "a.txt")
    set_batch(tmp_path, batch_id, state="creating", attempt=1, stage_waits=1,
              next_attempt_at=soon(300), last_error="AuthError: HTTP 401 Unauthorized")
    run = await arun_cli(capsys, "retry", batch_id, "--config", config, "--json")
    assert run.code == 0, run.err
    assert run.json["action"] == "retry_now" and run.json["state"] == "creating"
    assert run.json["was_due_at"] and run.json["last_error"].startswith("AuthError")
    assert batch_row(tmp_path, batch_id)["next_attempt_at"] is None


@pytest.mark.parametrize(
    ("columns", "why"),
    [({"state": "done"}, "it is done"),
     ({"state": "cancelled"}, "requeue FILE"),
     ({"state": "waiting", "x_job_id": "1460000000000000003"}, "not waiting"),
     ({"state": "queued", "next_attempt_at": iso(datetime(2020, 1, 1, tzinfo=UTC))},
      "was due at 2020-01-01")],
)
async def test_retry_explains_why_nothing_was_done(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], columns: dict[str, Any], why: str
) -> None:
    config = offline_config(tmp_path)
    batch_id = await make_batch(tmp_path, "n.txt")
    set_batch(tmp_path, batch_id, **columns)
    before = kinds(tmp_path)
    run = await arun_cli(capsys, "retry", batch_id, "--config", config)
    assert run.code == 1 and run.out == ""
    assert "nothing to retry" in run.err and why in run.err
    assert kinds(tmp_path) == before
