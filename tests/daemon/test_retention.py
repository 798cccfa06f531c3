"""daemon.retention: a pass deletes every prunable row in batches; 0 days keeps everything;
the running daemon prunes at start."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from clocks import FakeClock
from daemon_helpers import db_rows, load, running_service, wait_for, write_config
from structlog.testing import capture_logs

from orchestrator.clock import iso
from orchestrator.core.model import JobType
from orchestrator.daemon import retention
from orchestrator.layout import Layout
from orchestrator.sandbox import Sandbox
from orchestrator.store.sqlite import EventNote, Store


async def test_a_pass_prunes_in_batches_and_logs_the_total(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    store = await Store.open(tmp_path / "state.db", clock)
    try:
        await store.conn.execute("DELETE FROM events")
        await store.record_events([EventNote(f"e{i}") for i in range(25)])
        clock.advance(3 * 86400)
        monkeypatch.setattr(retention, "BATCH_ROWS", 10)
        assert await retention.prune_once(store, clock, 0) == 0  # off
        with capture_logs() as events:
            assert await retention.prune_once(store, clock, 2) == 25
        [line] = [e for e in events if e["event"] == "retention.pruned"]
        assert line["rows"] == 25
    finally:
        await store.close()


async def test_the_daemon_prunes_old_history_at_start(tmp_path: Path, sandbox: Sandbox) -> None:
    path = write_config(tmp_path, sandbox.base_url)
    path.write_text(path.read_text() + "\n[retention]\nevents_days = 1\noutbox_days = 1\n")
    config = load(path)
    old_files = _manifest(config.paths.outbox / "tweets", "old", 3, time.time())
    old = old_files[-1]
    clock = FakeClock()  # 2026-01-01: long before today
    (tmp_path / "state").mkdir()
    store = await Store.open(tmp_path / "state" / "state.db", clock)
    await store.record_events([EventNote("ancient")])
    clock.wall = datetime.now(UTC).timestamp()
    await store.record_events([EventNote("recent")])
    await store.close()
    async with running_service(config):
        await wait_for(lambda: db_rows(tmp_path, "SELECT kind FROM events WHERE kind = 'ancient'")
                       == [], what="the old event pruned")
        await wait_for(lambda: not old.exists(), what="the old delivery removed")
    assert not any(p.exists() for p in old_files)
    assert db_rows(tmp_path, "SELECT kind FROM events WHERE kind = 'recent'") == [
        {"kind": "recent"}]


def _write(path: Path, age_days: float, now: float, text: str = "x\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (now - age_days * 86400, now - age_days * 86400))
    return path


def _manifest(folder: Path, stem: str, age_days: float, now: float, *, delta: bool = False,
              compliant: bool = False) -> list[Path]:
    """A delivery as the daemon writes it: its files, then the manifest naming them."""
    document: dict[str, object] = {"output": {"file": f"{stem}.jsonl"}}
    files = [_write(folder / f"{stem}.jsonl", age_days, now)]
    if delta:
        document["delta"] = {"file": f"{stem}.delta.jsonl"}
        files.append(_write(folder / f"{stem}.delta.jsonl", age_days, now))
    if compliant:
        document["compliant_copy"] = {"file": f"{stem}.compliant.jsonl"}
        files.append(_write(folder / f"{stem}.compliant.jsonl", age_days, now))
    return [*files, _write(folder / f"{stem}.manifest.json", age_days, now, json.dumps(document))]


async def test_outbox_days_removes_old_deliveries_only(tmp_path: Path) -> None:
    clock = FakeClock()
    now = clock.now().timestamp()
    layout = Layout(tmp_path / "inbox", tmp_path / "outbox", tmp_path / "state")
    tweets, users = layout.outbox_for(JobType.TWEETS), layout.outbox_for(JobType.USERS)
    old = _manifest(tweets, "old", 40, now, delta=True, compliant=True)
    old_user = _manifest(users, "u", 40, now)
    # The results were rewritten lately, but the delivery's age is its manifest's.
    young = [_write(tweets / "young.jsonl", 40, now),
             _write(tweets / "young.manifest.json", 5, now,
                    json.dumps({"output": {"file": "young.jsonl"}}))]
    stray = _write(tweets / "no-manifest.jsonl", 40, now)  # not a delivery we know: kept
    # Another delivery whose stem extends an old one's (the input was `u.delta.csv`): its
    # results are `u.delta.jsonl`, which the old `u` (without a delta) does not own.
    young += _manifest(users, "u.delta", 5, now)
    unreadable = _write(tweets / "torn.manifest.json", 40, now, "{")  # left, reported
    rejected = [_write(layout.rejected / "bad.txt", 400, now),
                _write(layout.rejected / "bad.txt.manifest.json", 400, now)]
    assert await retention.prune_outbox_once(layout, clock, 0) == 0  # off by default
    assert all(p.exists() for p in old)
    with capture_logs() as events:
        assert await retention.prune_outbox_once(layout, clock, 30) == 2
    assert not any(p.exists() for p in old + old_user)
    assert all(p.exists() for p in [*young, stray, *rejected, unreadable])
    lines = {e["job_type"]: e for e in events if e["event"] == "retention.pruned"}
    assert (lines["tweets"]["deliveries"], lines["tweets"]["files"]) == (1, 4)
    assert (lines["users"]["deliveries"], lines["users"]["files"]) == (1, 2)
    assert await retention.prune_outbox_once(layout, clock, 30) == 0


async def test_outbox_pruning_goes_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    clock = FakeClock()
    now = clock.now().timestamp()
    layout = Layout(tmp_path / "inbox", tmp_path / "outbox", tmp_path / "state")
    folder = layout.outbox_for(JobType.TWEETS)
    for i in range(7):
        _manifest(folder, f"f{i}", 10, now)
    monkeypatch.setattr(retention, "BATCH_FILES", 3)
    assert await retention.prune_outbox_once(layout, clock, 1) == 7
    assert list(folder.iterdir()) == []


async def test_inputs_days_keeps_link_twins_and_logs(tmp_path: Path) -> None:
    clock = FakeClock()
    store = await Store.open(tmp_path / "state.db", clock)
    try:
        row = await store.insert_claiming(job_type=JobType.TWEETS, name="a.txt", out_stem="a",
                                          spool_name="a.txt", inode=1, size_bytes=1)
        async with store.transaction() as conn:
            await conn.execute("UPDATE inputs SET state = 'delivered', finished_at = ?"
                               " WHERE id = ?", (iso(clock.now()), row.id))
        clock.advance(10 * 86400)
        assert await retention.prune_inputs_once(store, clock, 0) == 0  # off
        # duplicate_content = "link" reuses inputs up to link_max_age_s: those stay.
        assert await retention.prune_inputs_once(store, clock, 1, keep_s=30 * 86400) == 0
        with capture_logs() as events:
            assert await retention.prune_inputs_once(store, clock, 1) == 1
        [line] = [e for e in events if e["event"] == "retention.pruned"]
        assert (line["table"], line["rows"]) == ("inputs", 1)
        assert await store.get_input(row.id) is None
    finally:
        await store.close()


async def test_inputs_days_keeps_a_rejection_whose_file_is_still_in_the_spool(
    tmp_path: Path
) -> None:
    """A rejection whose move to rejected/ was put off (a full disk over a weekend): its row
    is all that keeps the spool sweep off the only copy of the user's file, so it stays
    until the move is done, however old."""
    clock = FakeClock()
    spool = tmp_path / "spool"
    spool.mkdir()
    store = await Store.open(tmp_path / "state.db", clock)
    try:
        rows = []
        for name in ("moved.txt", "stuck.txt"):
            row = await store.insert_claiming(job_type=JobType.TWEETS, name=name,
                                              out_stem=name[:-4], spool_name=f"sp-{name}",
                                              inode=len(rows) + 1, size_bytes=1)
            async with store.transaction() as conn:
                await conn.execute("UPDATE inputs SET state = 'rejected', finished_at = ?"
                                   " WHERE id = ?", (iso(clock.now()), row.id))
            rows.append(row)
        (spool / "sp-stuck.txt").write_bytes(b"12345\n")  # not yet moved
        clock.advance(10 * 86400)
        assert await retention.prune_inputs_once(store, clock, 1, spool=spool) == 1
        assert await store.get_input(rows[0].id) is None
        assert await store.get_input(rows[1].id) is not None
        (spool / "sp-stuck.txt").unlink()  # moved at last
        assert await retention.prune_inputs_once(store, clock, 1, spool=spool) == 1
        assert await store.get_input(rows[1].id) is None
    finally:
        await store.close()
