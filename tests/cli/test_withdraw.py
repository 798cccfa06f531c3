"""`withdraw NAME [--type T]`: a queued file no batch carries goes to outbox/rejected/ with
reason `withdrawn`; one already in a batch is refused, pointing at `cancel BATCH`."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from admin_helpers import arun_cli, db, layout_of, make_batch, offline_config

from orchestrator.clock import SystemClock
from orchestrator.core.model import InputState, JobType
from orchestrator.store.sqlite import Store


async def queue_file(workdir: Path, name: str, job_type: JobType = JobType.TWEETS) -> int:
    """A validated input waiting for a batch, as intake leaves it (file in the spool)."""
    layout = layout_of(workdir)
    layout.ensure()
    store = await Store.open(layout.db_path, SystemClock(), backup_dir=layout.backups)
    try:
        item = await store.insert_claiming(
            job_type=job_type, name=name, out_stem=Path(name).stem,
            spool_name=f"{secrets.token_hex(6)}.{job_type}", inode=1, size_bytes=4)
        (layout.spool / item.spool_name).write_bytes(b"1\n2\n")
        (layout.spool / item.ids_name).write_bytes(b"1\n2\n")
        await store.move_input(item.id, [InputState.CLAIMING], InputState.CLAIMED,
                               event="inbox.claimed")
        await store.move_input(item.id, [InputState.CLAIMED], InputState.QUEUED,
                               event="input.queued", id_count=2)
    finally:
        await store.close()
    return item.id


async def test_withdraw_moves_a_queued_file_to_rejected_and_requeue_brings_it_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    input_id = await queue_file(tmp_path, "oops.txt")
    run = await arun_cli(capsys, "withdraw", "oops.txt", "--config", config, "--json")
    assert run.code == 0, run.err
    assert run.json["ok"] and run.json["reason"] == "withdrawn"
    assert run.json["rejected_as"] == "oops.txt"
    rejected = tmp_path / "outbox/rejected"
    assert (rejected / "oops.txt").read_bytes() == b"1\n2\n"
    record = json.loads((rejected / "oops.txt.error.json").read_text())
    assert (record["reason"], record["job_type"], record["input_id"]) == (
        "withdrawn", "tweets", input_id)
    assert db(tmp_path, "SELECT state FROM inputs WHERE id = ?", (input_id,)) == [
        {"state": "rejected"}]
    assert [r["kind"] for r in db(tmp_path, "SELECT kind FROM events WHERE input_id = ?"
                                  " ORDER BY id", (input_id,))][-1] == "operator.withdraw"
    assert list((tmp_path / "state/spool").iterdir()) == []
    back = await arun_cli(capsys, "requeue", "oops.txt", "--config", config)
    assert back.code == 0, back.err
    assert (tmp_path / "inbox/tweets/oops.txt").read_bytes() == b"1\n2\n"


async def test_withdraw_refuses_a_file_in_a_batch_and_points_at_cancel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    batch_id = await make_batch(tmp_path, name="busy.txt")
    run = await arun_cli(capsys, "withdraw", "busy.txt", "--config", config, "--json")
    assert run.code == 1
    assert f"`cancel {batch_id}`" in run.json["error"] and run.json["batch_ids"] == [batch_id]
    assert db(tmp_path, "SELECT state FROM inputs") == [{"state": "batched"}]
    assert not (tmp_path / "outbox/rejected/busy.txt").exists()


async def test_withdraw_unknown_name_is_1_and_an_ambiguous_one_needs_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    await queue_file(tmp_path, "same.txt", JobType.TWEETS)
    users_id = await queue_file(tmp_path, "same.txt", JobType.USERS)
    missing = await arun_cli(capsys, "withdraw", "nope.txt", "--config", config)
    assert missing.code == 1 and "status --files" in missing.err
    both = await arun_cli(capsys, "withdraw", "same.txt", "--config", config)
    assert both.code == 2 and "--type" in both.err
    one = await arun_cli(capsys, "withdraw", "same.txt", "--type", "users", "--config", config,
                         "--json")
    assert one.code == 0 and one.json["input_id"] == users_id
    assert [r["state"] for r in db(tmp_path, "SELECT state FROM inputs ORDER BY id")] == [
        "queued", "rejected"]
