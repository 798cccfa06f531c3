"""Burst mode (daemon/burst.py, `Service.until_idle`, `Service.run(until_idle=True)`): the
daemon says when everything dropped so far has its outcome, so a caller need not poll."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest
from daemon_helpers import TOKEN, drop, load, make_ids, outcome, read_results, write_config
from resilience_helpers import spool_empty, tap_logs

from orchestrator.core.model import JobType
from orchestrator.daemon.burst import inbox_holds_work, spool_holds_files
from orchestrator.daemon.service import Service
from orchestrator.sandbox import Sandbox


def test_an_inbox_with_empty_type_folders_and_work_in_progress_holds_no_work(
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "inbox"
    assert not inbox_holds_work(inbox)  # not created yet
    for job_type in JobType:
        (inbox / str(job_type)).mkdir(parents=True)
    (inbox / "tweets" / "big.txt.part").write_text("1\n")  # a producer still writing
    (inbox / "users" / ".hidden").write_text("1\n")
    (inbox / "lost+found").mkdir()
    assert not inbox_holds_work(inbox)


@pytest.mark.parametrize("entry", ["tweets/ids.txt", "users/folder/", "stray.txt", "other/"])
def test_anything_the_scan_would_claim_or_reject_is_work(tmp_path: Path, entry: str) -> None:
    inbox = tmp_path / "inbox"
    for job_type in JobType:
        (inbox / str(job_type)).mkdir(parents=True)
    path = inbox / entry
    if entry.endswith("/"):
        path.mkdir()
    else:
        path.write_text("1\n")
    assert inbox_holds_work(inbox)


def test_an_unreadable_folder_may_hold_work(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every folder")
    tweets = tmp_path / "inbox" / "tweets"
    tweets.mkdir(parents=True)
    tweets.chmod(0)
    try:
        assert inbox_holds_work(tmp_path / "inbox")
    finally:
        tweets.chmod(0o755)


def test_a_spool_is_empty_only_when_nothing_is_in_it(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    assert not spool_holds_files(spool)
    spool.mkdir()
    assert not spool_holds_files(spool)
    (spool / ".tmp-results.jsonl-1").write_bytes(b"")  # even a temp file is work in flight
    assert spool_holds_files(spool)


async def test_until_idle_returns_once_every_dropped_file_has_its_outcome(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config = load(write_config(tmp_path, sandbox.base_url, min_age_s=0.2))
    service = Service(config, TOKEN)
    tweets = {f"t{n}.txt": make_ids(n, 30) for n in range(3)}
    users = make_ids(9, 20)
    async with anyio.create_task_group() as group:
        ready = anyio.Event()
        group.start_soon(lambda: service.run(on_ready=ready.set))
        await ready.wait()
        for name, ids in tweets.items():
            drop(tmp_path, "tweets", name, ids)
        drop(tmp_path, "users", "u.txt", users)
        drop(tmp_path, "tweets", "bad.txt", ["12", "not-an-id"])
        with anyio.fail_after(60):
            await service.until_idle()
        # Everything is final at the moment it returns, not a moment later.
        assert {name: outcome(tmp_path, "tweets", name) for name in tweets} == dict.fromkeys(
            tweets, "delivered")
        assert outcome(tmp_path, "users", "u.txt") == "delivered"
        assert outcome(tmp_path, "tweets", "bad.txt") == "rejected"
        assert spool_empty(tmp_path)
        service.stop()
    for name, ids in tweets.items():
        assert read_results(tmp_path, "tweets", Path(name).stem) == sandbox.expected_results(
            "tweets", ids)


async def test_run_until_idle_stops_by_itself_when_the_queue_is_drained(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config = load(write_config(tmp_path, sandbox.base_url))
    drop(tmp_path, "tweets", "before-start.txt", make_ids(1, 40))
    (tmp_path / "inbox" / "stray.txt").write_text("1\n")  # not in a type folder: rejected
    with tap_logs() as logs, anyio.fail_after(60):
        await Service(config, TOKEN).run(until_idle=True)
    assert outcome(tmp_path, "tweets", "before-start.txt") == "delivered"
    assert (tmp_path / "outbox" / "rejected" / "stray.txt.error.json").exists()
    assert spool_empty(tmp_path)
    events = [e["event"] for e in logs.daemon_records()]
    assert events.count("service.idle") == 1
    assert events.index("service.idle") < events.index("service.stopping")
    assert events[-1] == "service.stopped"
