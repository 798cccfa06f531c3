"""Signals: SIGTERM lets the step in flight finish (within a grace period), exits 0, and the
next start resumes; SIGHUP takes over the log level and poll bounds and names the rest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
from daemon_helpers import (
    TOKEN,
    db_rows,
    drop,
    load,
    make_ids,
    outcome,
    read_results,
    running_service,
    wait_for,
    write_config,
)

from orchestrator.daemon.service import Service
from orchestrator.sandbox import Sandbox


def _spawn(config_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "X_BEARER_TOKEN": TOKEN}
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
        env.pop(name, None)
    with open(config_path.parent / "daemon.log", "ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "run", "--config", str(config_path)],
            env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )


def _events(workdir: Path) -> list[dict[str, Any]]:
    path = workdir / "daemon.log"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a partly written last line
    return out


def _names(workdir: Path) -> list[str]:
    return [e.get("event", "") for e in _events(workdir)]


async def _exit_code(process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    await wait_for(lambda: process.poll() is not None, timeout=timeout, what="the daemon to exit")
    assert process.returncode is not None
    return process.returncode


async def test_sigterm_mid_upload_finishes_the_step_exits_0_and_resumes(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config_path = write_config(tmp_path, sandbox.base_url)
    sandbox.faults.add("upload", "slow", count=1, delay=1.5)
    ids = make_ids(21, 300)
    process = _spawn(config_path)
    try:
        await wait_for(lambda: "service.ready" in _names(tmp_path), what="ready")
        drop(tmp_path, "tweets", "busy.txt", ids)
        # The slow fault is taken when the upload reaches the server: it is in flight now.
        await wait_for(lambda: "upload.transferred" not in _names(tmp_path)
                       and not sandbox.faults.pending(), what="upload in flight")
        process.send_signal(signal.SIGTERM)
        assert await _exit_code(process) == 0
    finally:
        if process.poll() is None:
            process.kill()
    names = _names(tmp_path)
    # The upload step ran to its end and was persisted, and nothing new was started.
    assert names.index("service.stopping") < names.index("upload.completed")
    assert names.index("upload.completed") < names.index("service.drained")
    assert names[-1] == "service.stopped"
    assert "xapi.request" not in names[names.index("upload.completed"):]
    assert [r["state"] for r in db_rows(tmp_path, "SELECT state FROM batches")] == ["waiting"]
    assert outcome(tmp_path, "tweets", "busy.txt") is None

    again = _spawn(config_path)
    try:
        await wait_for(lambda: outcome(tmp_path, "tweets", "busy.txt") == "delivered",
                       what="delivery after the restart")
        again.send_signal(signal.SIGINT)
        assert await _exit_code(again) == 0
    finally:
        if again.poll() is None:
            again.kill()
    assert read_results(tmp_path, "tweets", "busy") == sandbox.expected_results("tweets", ids)
    assert sorted(p.name for p in (tmp_path / "outbox" / "tweets").iterdir()) == [
        "busy.jsonl", "busy.manifest.json"]
    assert len(sandbox.jobs()) == 1


async def test_a_step_longer_than_the_grace_is_cancelled_and_redone(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config = load(write_config(tmp_path, sandbox.base_url))
    sandbox.faults.add("upload", "slow", count=1, delay=30)
    ids = make_ids(22, 100)
    service = Service(config, TOKEN, stop_grace_s=0.3)
    with structlog.testing.capture_logs() as logs, anyio.fail_after(15):  # < the 30 s upload
        async with anyio.create_task_group() as group:
            group.start_soon(service.run)
            drop(tmp_path, "users", "stuck.txt", ids)
            await wait_for(lambda: not sandbox.faults.pending(), what="upload in flight")
            service.stop()
            drop(tmp_path, "users", "late.txt", make_ids(23, 10))
    events = [e["event"] for e in logs]
    assert "service.grace_over" in events and "upload.completed" not in events
    # Stopping means no new claims: the file dropped during the stop waits in the inbox.
    assert (tmp_path / "inbox" / "users" / "late.txt").exists()

    async with running_service(config):
        await wait_for(lambda: outcome(tmp_path, "users", "stuck.txt") == "delivered"
                       and outcome(tmp_path, "users", "late.txt") == "delivered")
    assert read_results(tmp_path, "users", "stuck") == sandbox.expected_results("users", ids)
    assert len(sandbox.jobs()) == 2  # stuck.txt's upload went to the same job again


async def test_a_second_stop_cuts_the_grace_short(tmp_path: Path, sandbox: Sandbox) -> None:
    config = load(write_config(tmp_path, sandbox.base_url))
    sandbox.faults.add("upload", "slow", count=1, delay=30)
    service = Service(config, TOKEN, stop_grace_s=60)
    with anyio.fail_after(15):  # far below the 60 s grace and the 30 s upload
        async with anyio.create_task_group() as group:
            group.start_soon(service.run)
            drop(tmp_path, "tweets", "ids.txt", make_ids(24, 10))
            await wait_for(lambda: not sandbox.faults.pending(), what="upload in flight")
            service.stop()
            await wait_for(lambda: service.phase == "stopping")
            service.stop()  # like a second Ctrl-C


async def test_sighup_changes_the_log_level_and_names_what_needs_a_restart(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config_path = write_config(tmp_path, sandbox.base_url)
    original = config_path.read_text()
    config_path.write_text(original.replace('level = "debug"', 'level = "info"'))
    process = _spawn(config_path)
    try:
        await wait_for(lambda: "service.ready" in _names(tmp_path), what="ready")
        assert "service.status" not in _names(tmp_path)  # a debug line
        config_path.write_text(
            original.replace("max_interval_s = 0.5", "max_interval_s = 0.25")
            .replace("rescan_interval_s = 0.5", "rescan_interval_s = 0.75")
        )
        process.send_signal(signal.SIGHUP)
        await wait_for(lambda: "service.reloaded" in _names(tmp_path), what="reloaded")
        drop(tmp_path, "users", "after.txt", make_ids(25, 10))
        await wait_for(lambda: outcome(tmp_path, "users", "after.txt") == "delivered")
        process.send_signal(signal.SIGTERM)
        assert await _exit_code(process) == 0
    finally:
        if process.poll() is None:
            process.kill()
    events = _events(tmp_path)
    reloaded = next(e for e in events if e["event"] == "service.reloaded")
    assert reloaded["changed"] == ["log.level", "poll.max_interval_s"]
    assert reloaded["values"] == {"log.level": "debug", "poll.max_interval_s": 0.25}
    assert reloaded["needs_restart"] == ["inbox.rescan_interval_s"]
    restart = next(e for e in events if e["event"] == "service.reload_needs_restart")
    assert restart["level"] == "warning" and restart["keys"] == ["inbox.rescan_interval_s"]
    after = [e["level"] for e in events[events.index(reloaded):]]
    assert "debug" in after  # the new level is in effect


async def test_reload_puts_new_poll_bounds_into_the_running_policy(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config_path = write_config(tmp_path, sandbox.base_url)
    async with running_service(load(config_path)) as service:
        assert service.runner is not None
        config_path.write_text(
            config_path.read_text().replace("initial_interval_s = 0.1", "initial_interval_s = 0.2")
        )
        await service.reload()
        assert service.runner.policy.poll_initial_s == 0.2
        assert service.config.poll.initial_interval_s == 0.2
        config_path.write_text("[poll]\ninitial_interval_s = -1\n")
        with structlog.testing.capture_logs() as logs:
            await service.reload()  # a broken file changes nothing
        assert logs[-1]["event"] == "service.reload_failed"
        assert service.runner.policy.poll_initial_s == 0.2


@pytest.fixture(autouse=True)
def _quiet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
