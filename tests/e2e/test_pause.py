"""`pause` for maintenance, with the real daemon: noticed while it runs, kept across a restart
(no remote job starts, new files are still claimed), and `resume` lets the queued file through."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from admin_helpers import arun_cli, db, make_batch
from daemon_helpers import (
    drained,
    drop,
    load,
    make_ids,
    outcome,
    read_results,
    running_service,
    wait_for,
    write_config,
)

from orchestrator.cli import common as admin_common
from orchestrator.logs import configure_logging, reset_logging
from orchestrator.sandbox import Sandbox


@pytest.fixture
def daemon_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The daemon's log lines (the commands run in this process: keep its logging set-up)."""
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    monkeypatch.setattr(admin_common, "quiet_logging", lambda: None)
    yield stream
    reset_logging()


def paused_logs(log: io.StringIO) -> int:
    return log.getvalue().count('"scheduler.paused"')


def queued(workdir: Path, name: str) -> bool:
    return [r["state"] for r in db(workdir, "SELECT state FROM inputs WHERE name = ?",
                                   (name,))] == ["queued"]


async def test_pause_survives_a_restart_and_resume_lets_the_queued_file_through(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str],
    daemon_log: io.StringIO,
) -> None:
    config_path = write_config(tmp_path, sandbox.base_url)
    config = load(config_path)
    ids = make_ids(3, 25)
    async with running_service(config):
        paused = await arun_cli(capsys, "pause", "--config", config_path, "--reason", "upgrade")
        assert paused.code == 0, paused.err
        drop(tmp_path, "tweets", "held.txt", ids)  # wakes the lanes: they see the pause
        await wait_for(lambda: queued(tmp_path, "held.txt") and paused_logs(daemon_log) >= 1,
                       what="the file claimed and the pause noticed")
    # Claimed and queued, but no batch formed and nothing sent to X.
    assert db(tmp_path, "SELECT id FROM batches") == []
    assert sandbox.jobs() == []

    async with running_service(config) as service:
        await wait_for(lambda: paused_logs(daemon_log) >= 2, what="the pause seen after restart")
        status = await arun_cli(capsys, "status", "--config", config_path)
        assert "PAUSED since" in status.out and "by operator (upgrade)" in status.out
        assert queued(tmp_path, "held.txt") and sandbox.jobs() == []
        resumed = await arun_cli(capsys, "resume", "--config", config_path)
        assert resumed.code == 0, resumed.err
        await drained(service)
    assert outcome(tmp_path, "tweets", "held.txt") == "delivered"
    assert read_results(tmp_path, "tweets", "held") == sandbox.expected_results("tweets", ids)
    assert '"scheduler.resumed"' in daemon_log.getvalue()


async def test_a_batch_formed_before_the_pause_does_not_start_until_resume(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str],
    daemon_log: io.StringIO,
) -> None:
    config_path = write_config(tmp_path, sandbox.base_url)
    batch_id = await make_batch(tmp_path, name="formed.txt")
    paused = await arun_cli(capsys, "pause", "--config", config_path)
    assert paused.code == 0, paused.err
    async with running_service(load(config_path)) as service:
        # The batch exists already, so this is the lane holding its start (QUEUED -> CREATING).
        await wait_for(lambda: paused_logs(daemon_log) >= 1, what="the start held")
        assert db(tmp_path, "SELECT state FROM batches WHERE id = ?", (batch_id,)) == [
            {"state": "queued"}]
        assert sandbox.jobs() == []
        assert (await arun_cli(capsys, "resume", "--config", config_path)).code == 0
        await drained(service)
    assert db(tmp_path, "SELECT state FROM batches WHERE id = ?", (batch_id,)) == [
        {"state": "done"}]
    assert outcome(tmp_path, "tweets", "formed.txt") == "delivered"
