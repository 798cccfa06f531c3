"""daemon.retention: a pass deletes every prunable row in batches; 0 days keeps everything;
the running daemon prunes at start."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from clocks import FakeClock
from daemon_helpers import db_rows, load, running_service, wait_for, write_config
from structlog.testing import capture_logs

from orchestrator.daemon import retention
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
    path.write_text(path.read_text() + "\n[retention]\nevents_days = 1\n")
    config = load(path)
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
    assert db_rows(tmp_path, "SELECT kind FROM events WHERE kind = 'recent'") == [
        {"kind": "recent"}]
