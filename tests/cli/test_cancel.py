"""`cancel` on a state database left by the daemon (daemon stopped).

The scenarios with the daemon running are in tests/e2e/test_admin.py.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from admin_helpers import (
    SIGNED,
    arun_cli,
    assert_no_secrets,
    batch_row,
    db,
    layout_of,
    make_batch,
    offline_config,
    set_batch,
)

from orchestrator.cli import cancel as admin_cancel
from orchestrator.clock import SystemClock
from orchestrator.daemon.intake import Intake
from orchestrator.logs import reset_logging
from orchestrator.store.sqlite import Store


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    reset_logging()


def input_row(workdir: Path) -> dict[str, Any]:
    return db(workdir, "SELECT * FROM inputs ORDER BY id")[0]


def kinds(workdir: Path) -> list[str]:
    return [e["kind"] for e in db(workdir, "SELECT kind FROM events ORDER BY id")]


async def test_cancel_a_queued_batch_rejects_its_inputs_with_a_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    batch_id = await make_batch(tmp_path, "queued.txt", content=b"11\n22\n33\n")
    item = input_row(tmp_path)
    run = await arun_cli(capsys, "cancel", batch_id, "--config", config)
    assert run.code == 0, run.err
    assert f"batch {batch_id} (tweets) cancelled (it was queued)" in run.out
    assert "requeue 'queued.txt'" in run.out
    rejected = tmp_path / "outbox/rejected"
    assert (rejected / "queued.txt").read_bytes() == b"11\n22\n33\n"  # untouched
    record = json.loads((rejected / "queued.txt.error.json").read_text())
    assert record["reason"] == "cancelled"
    assert record["job_type"] == "tweets" and record["input_id"] == item["id"]
    assert record["batch_id"] == batch_id and record["stage"] == "queued"
    assert batch_row(tmp_path, batch_id)["state"] == "cancelled"
    assert batch_row(tmp_path, batch_id)["finished_at"]
    assert input_row(tmp_path)["state"] == "rejected"
    assert kinds(tmp_path)[-2:] == ["operator.cancel", "input.rejected"]
    assert sorted(p.name for p in layout_of(tmp_path).spool.iterdir()) == []  # nothing left

    # The record carries the job type: requeue needs nothing else.
    run = await arun_cli(capsys, "requeue", "queued.txt", "--config", config)
    assert run.code == 0, run.err
    assert (tmp_path / "inbox/tweets/queued.txt").read_bytes() == b"11\n22\n33\n"

    run = await arun_cli(capsys, "cancel", batch_id, "--config", config)
    assert run.code == 1 and "already cancelled" in run.err


async def test_cancel_json_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = offline_config(tmp_path)
    batch_id = await make_batch(tmp_path, "j.txt")
    run = await arun_cli(capsys, "cancel", batch_id, "--config", config, "--json")
    assert run.code == 0, run.err
    result = run.json
    assert result["ok"] is True and result["batch_id"] == batch_id
    assert result["from_state"] == "queued" and result["state"] == "cancelled"
    assert result["forced"] is False and result["remote_job"] is None
    assert [r["rejected_as"] for r in result["rejected"]] == ["j.txt"]
    assert result["warnings"] == []


@pytest.mark.parametrize("state", ["uploading", "waiting", "downloading"])
async def test_a_batch_with_a_remote_job_needs_force_and_says_what_happens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], state: str
) -> None:
    config = offline_config(tmp_path)
    batch_id = await make_batch(tmp_path, "remote.txt")
    set_batch(tmp_path, batch_id, state=state, attempt=1, x_job_id="1460000000000000001",
              x_job_name="co-test-1", upload_url=SIGNED, download_url=SIGNED)
    run = await arun_cli(capsys, "cancel", batch_id, "--config", config)
    assert run.code == 1
    assert "remote job 1460000000000000001" in run.err and "--force" in run.err
    assert "no endpoint to cancel" in run.err
    assert batch_row(tmp_path, batch_id)["state"] == state  # untouched
    assert (layout_of(tmp_path).spool / input_row(tmp_path)["spool_name"]).exists()

    run = await arun_cli(capsys, "cancel", batch_id, "--force", "--config", config, "--json")
    assert run.code == 0, run.err
    assert_no_secrets(run.out, run.err)
    remote = run.json["remote_job"]
    assert remote["x_job_id"] == "1460000000000000001"
    assert "keeps running until it completes or expires" in remote["note"]
    assert "results will not be downloaded" in remote["note"]
    assert batch_row(tmp_path, batch_id)["state"] == "cancelled"
    job = db(tmp_path, "SELECT final_status, error FROM remote_jobs")[0]
    assert job == {"final_status": "abandoned", "error": "cancelled by operator"}
    record = json.loads((tmp_path / "outbox/rejected/remote.txt.error.json").read_text())
    assert record["remote_job_left_running"] == "1460000000000000001"
    assert "Signature" not in json.dumps(record)


async def test_force_while_creating_warns_that_a_job_may_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    batch_id = await make_batch(tmp_path, "c.txt")
    set_batch(tmp_path, batch_id, state="creating", attempt=1, x_job_name="co-abc-1")
    run = await arun_cli(capsys, "cancel", batch_id, "--force", "--config", config)
    assert run.code == 0, run.err
    assert "a remote job named co-abc-1 (its creation request may have been sent)" in run.out
    assert "keeps running" in run.out


@pytest.mark.parametrize(
    ("state", "why"),
    [("delivering", "cannot be cancelled"), ("done", "already done"),
     ("failed", "already failed"), ("cancelled", "already cancelled")],
)
async def test_cancel_refuses_other_states_even_with_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], state: str, why: str
) -> None:
    config = offline_config(tmp_path)
    batch_id = await make_batch(tmp_path, "d.txt")
    set_batch(tmp_path, batch_id, state=state, x_job_id="1460000000000000002")
    for extra in ([], ["--force"]):
        run = await arun_cli(capsys, "cancel", batch_id, *extra, "--config", config, "--json")
        assert run.code == 1
        assert why in run.err
        assert run.json["ok"] is False and run.json["state"] == state
    assert batch_row(tmp_path, batch_id)["state"] == state


async def test_unknown_batch_missing_database_and_wrong_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    for command in ("cancel", "retry"):
        run = await arun_cli(capsys, command, "7", "--config", config)
        assert run.code == 1 and "no state database" in run.err
    await make_batch(tmp_path, "x.txt")
    for command in ("cancel", "retry"):
        run = await arun_cli(capsys, command, "7", "--config", config)
        assert run.code == 1 and "no batch 7" in run.err
    db(tmp_path, "PRAGMA user_version = 99")
    run = await arun_cli(capsys, "cancel", "1", "--config", config)
    assert run.code == 2 and "newer than this program" in run.err
    db_path = tmp_path / "state/state.db"
    db_path.unlink()
    sqlite3.connect(db_path).close()  # an empty database: schema version 0
    run = await arun_cli(capsys, "retry", "1", "--config", config)
    assert run.code == 2 and "migrate" in run.err


async def test_a_crash_between_database_and_files_is_finished_by_the_daemon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = offline_config(tmp_path)
    batch_id = await make_batch(tmp_path, "half.txt", content=b"5\n")

    def no_room(*_args: Any, **_kw: Any) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(admin_cancel, "reject_file", no_room)
    run = await arun_cli(capsys, "cancel", batch_id, "--config", config)
    assert run.code == 0, run.err
    assert "half.txt is still in the spool" in run.out
    assert input_row(tmp_path)["state"] == "rejected"
    assert not (tmp_path / "outbox/rejected/half.txt").exists()

    # The daemon's start-up recovery moves it with the record the command stored.
    layout = layout_of(tmp_path)
    store = await Store.open(layout.db_path, SystemClock())
    try:
        await Intake(store, layout).recover()
    finally:
        await store.close()
    assert (tmp_path / "outbox/rejected/half.txt").read_bytes() == b"5\n"
    record = json.loads((tmp_path / "outbox/rejected/half.txt.error.json").read_text())
    assert record["reason"] == "cancelled" and record["job_type"] == "tweets"
