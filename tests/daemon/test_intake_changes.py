"""A producer that skips the `.part` rename and goes on writing after the claim: what it
writes lands in the spooled file. The daemon must never deliver results for part of a file:
a change seen before the upload waits for the file to be quiet and reads it again; a change
seen at delivery rejects the input (`changed_after_claim`) with the whole file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import structlog
from daemon_helpers import (
    TOKEN,
    db_rows,
    load,
    make_ids,
    running_service,
    wait_for,
    write_config,
)

from orchestrator.core.model import InputState, JobType
from orchestrator.daemon import claim_recovery
from orchestrator.daemon import intake as intake_module
from orchestrator.daemon.intake import Intake
from orchestrator.files.inbox import Candidate
from orchestrator.sandbox import Sandbox, SandboxConfig


def text(ids: list[str]) -> bytes:
    return "".join(f"{i}\n" for i in ids).encode()


def candidate(path: Path) -> Candidate:
    st = path.stat()
    return Candidate(path, JobType.TWEETS, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


async def test_a_file_written_to_while_it_is_validated_is_not_queued_until_quiet(
    intake: Intake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, more = make_ids(501, 200), make_ids(502, 100)
    path = tmp_path / "inbox" / "tweets" / "slow.txt"
    path.write_bytes(text(first))
    writer = open(path, "ab")  # noqa: SIM115 (the producer's open file, kept across the claim)
    real = intake_module.validate_id_file
    appended = False

    def write_meanwhile(*args: Any, **kwargs: Any) -> Any:
        nonlocal appended
        report = real(*args, **kwargs)
        if not appended:  # the producer writes its next lines while the daemon reads
            appended = True
            writer.write(text(more))
            writer.flush()
        return report

    monkeypatch.setattr(intake_module, "validate_id_file", write_meanwhile)
    try:
        with structlog.testing.capture_logs() as logs:
            claimed = await intake.claim(candidate(path))
        assert claimed is not None and not path.exists()
        item = await intake.store.get_input(claimed.id)
        assert item is not None and item.state is InputState.CLAIMED  # not queued: 200 of 300
        warned = [e for e in logs if e["event"] == "input.changed_after_claim"]
        assert len(warned) == 1 and warned[0]["log_level"] == "warning"
        assert warned[0]["file"] == "slow.txt" and warned[0]["bytes_now"] == len(
            text(first + more))
        writer.close()
        await intake.maintenance()  # the next rescan: unchanged since, so read again
        item = await intake.store.get_input(claimed.id)
        assert item is not None and item.state is InputState.QUEUED
        assert item.id_count == 300 and item.size_bytes == len(text(first + more))
    finally:
        writer.close()


async def test_a_changed_claimed_file_waits_for_the_quiet_period(
    intake: Intake, tmp_path: Path
) -> None:
    path = tmp_path / "inbox" / "tweets" / "s.txt"
    path.write_bytes(text(make_ids(503, 5)))
    seen = candidate(path)
    with open(path, "ab") as writer:  # written after the scan, before the claim's read
        writer.write(text(make_ids(504, 5)))
    intake.settle_s = 3600.0  # its mtime is seconds old: not quiet long enough yet
    claimed = await intake.claim(seen)
    assert claimed is not None
    for _ in range(2):
        await intake.maintenance()
        item = await intake.store.get_input(claimed.id)
        assert item is not None and item.state is InputState.CLAIMED
    intake.settle_s = 0.0
    await intake.maintenance()
    item = await intake.store.get_input(claimed.id)
    assert item is not None and item.state is InputState.QUEUED and item.id_count == 10


async def test_a_slow_writer_after_the_upload_gets_its_file_rejected_whole_not_truncated(
    tmp_path: Path,
) -> None:
    """The issue's reproduction: 200 IDs, a pause long enough for the claim, 100 more through
    the same open file. Before: 200 results delivered, the last 100 IDs deleted with the spool
    copy, nothing said. Now: no results for part of a file, the whole file in rejected/."""
    first, more = make_ids(505, 200), make_ids(506, 100)
    # A slow remote job: the producer's late write lands while the job runs.
    async with Sandbox(SandboxConfig(token=TOKEN, processing_time_s=3.0, seed=5)) as sandbox:
        config = load(write_config(tmp_path, sandbox.base_url))
        path = tmp_path / "inbox" / "tweets" / "slow.txt"
        with structlog.testing.capture_logs() as logs:
            async with running_service(config):
                with open(path, "ab") as writer:
                    writer.write(text(first))
                    writer.flush()
                    await wait_for(lambda: db_rows(
                        tmp_path, "SELECT 1 FROM inputs WHERE name = 'slow.txt' AND state = ?",
                        ("batched",)) != [], what="slow.txt batched")
                    writer.write(text(more))
                rejected = tmp_path / "outbox" / "rejected"
                await wait_for(lambda: (rejected / "slow.txt").exists(), timeout=60,
                               what="slow.txt rejected")
                await wait_for(lambda: db_rows(tmp_path, "SELECT 1 FROM batches WHERE state = ?",
                                               ("done",)) != [], what="the batch done")
    assert not (tmp_path / "outbox" / "tweets" / "slow.jsonl").exists()
    assert not (tmp_path / "outbox" / "tweets" / "slow.manifest.json").exists()
    assert (rejected / "slow.txt").read_bytes() == text(first + more)  # nothing lost
    record = json.loads((rejected / "slow.txt.error.json").read_text())
    assert record["reason"] == "changed_after_claim" and "slow.txt" in record["message"]
    assert str(len(text(first + more))) in record["message"]
    assert str(len(text(first))) in record["message"]
    errors = [e for e in logs if e["event"] == "input.changed_after_claim"]
    assert errors and errors[0]["log_level"] == "error"
    spool = tmp_path / "state" / "spool"
    assert [p.name for p in spool.iterdir() if not p.name.startswith("batch-")] == []


async def test_recovery_finds_a_non_utf8_original_by_its_raw_name(
    intake: Intake, tmp_path: Path
) -> None:
    """kill -9 after a cross-filesystem claim's copy, before the original was removed: the
    recovery must find the original by its bytes, not by the `\\xff` display name, or the file
    stays in the inbox and is processed a second time."""
    folder = tmp_path / "inbox" / "tweets"
    raw_name = b"caf\xe9-\xff.txt"  # Latin-1, not UTF-8
    original = Path(os.fsdecode(os.fsencode(folder) + b"/" + raw_name))
    original.write_bytes(text(make_ids(507, 3)))
    seen = candidate(original)
    row = await intake.store.insert_claiming(
        job_type=JobType.TWEETS, name="caf\\xe9-\\xff.txt", out_stem="cafe", spool_name="c.tweets",
        inode=seen.inode, size_bytes=seen.size, name_bytes=raw_name, mtime_ns=seen.mtime_ns,
        ctime_ns=seen.ctime_ns)
    copy = intake.layout.spool / "c.tweets"  # the completed copy (another inode)
    copy.write_bytes(original.read_bytes())
    await intake.recover()
    assert not original.exists()  # removed: claimed exactly once
    item = await intake.store.get_input(row.id)
    assert item is not None and item.state is InputState.QUEUED and item.id_count == 3
    assert list(folder.iterdir()) == []


async def test_recovery_never_removes_a_new_file_that_reused_the_inode(
    intake: Intake, tmp_path: Path
) -> None:
    """Inode numbers are reused: the original was removed and a new file of the same size got
    its inode. Inode + size is not enough to call it the copied file."""
    original = tmp_path / "inbox" / "tweets" / "n.txt"
    original.write_bytes(b"111\n")
    seen = candidate(original)
    row = await intake.store.insert_claiming(
        job_type=JobType.TWEETS, name="n.txt", out_stem="n", spool_name="n.tweets",
        inode=seen.inode, size_bytes=seen.size, name_bytes=b"n.txt",
        mtime_ns=seen.mtime_ns - 1_000_000_000, ctime_ns=seen.ctime_ns - 1_000_000_000)
    (intake.layout.spool / "n.tweets").write_bytes(b"999\n")  # what the claim copied
    await intake.recover()
    assert original.read_bytes() == b"111\n"  # the new file stays for its own claim
    item = await intake.store.get_input(row.id)
    assert item is not None and item.state is InputState.QUEUED


async def test_recovery_keeps_a_same_inode_file_whose_content_differs(
    intake: Intake, tmp_path: Path
) -> None:
    original = tmp_path / "inbox" / "tweets" / "m.txt"
    original.write_bytes(b"111\n")
    seen = candidate(original)
    await intake.store.insert_claiming(
        job_type=JobType.TWEETS, name="m.txt", out_stem="m", spool_name="m.tweets",
        inode=seen.inode, size_bytes=seen.size, name_bytes=b"m.txt", mtime_ns=seen.mtime_ns,
        ctime_ns=seen.ctime_ns)
    (intake.layout.spool / "m.tweets").write_bytes(b"222\n")
    await intake.recover()
    assert original.read_bytes() == b"111\n"


async def test_recovery_keeps_the_copy_when_the_producer_removes_the_original_meanwhile(
    intake: Intake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 after a cross-filesystem claim committed its copy, before the original went.
    On restart, comparing a large original with the copy takes seconds; the producer deletes
    the original meanwhile. Before: the unlink failed (FileNotFoundError), the recovery took
    it for "cannot remove it", deleted the copy and undid the claim: the input was gone from
    both places. The seam: the real comparison, then the producer's rm."""
    original = tmp_path / "inbox" / "tweets" / "big.txt"
    original.write_bytes(text(make_ids(508, 40)))
    seen = candidate(original)
    row = await intake.store.insert_claiming(
        job_type=JobType.TWEETS, name="big.txt", out_stem="big", spool_name="b.tweets",
        inode=seen.inode, size_bytes=seen.size, name_bytes=b"big.txt", mtime_ns=seen.mtime_ns,
        ctime_ns=seen.ctime_ns)
    copy = intake.layout.spool / "b.tweets"  # the committed copy (another inode)
    copy.write_bytes(original.read_bytes())
    real = claim_recovery.is_the_copied_file

    def producer_removes_it_meanwhile(*args: Any) -> bool:
        same = real(*args)
        original.unlink()
        return same

    monkeypatch.setattr(claim_recovery, "is_the_copied_file", producer_removes_it_meanwhile)
    await intake.recover()
    assert copy.read_bytes() == text(make_ids(508, 40))  # the only copy, kept
    item = await intake.store.get_input(row.id)
    assert item is not None and item.state is InputState.QUEUED and item.id_count == 40
