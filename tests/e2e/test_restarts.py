"""Stop the daemon at every stage of a job's life, start it again, get exactly one result.

Two ways to die: an in-process stop at a precise line (right after a state was persisted,
or right after a remote side effect but before its result was persisted), and a real
SIGKILL of a `run` subprocess while the database shows a given stage.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from daemon_helpers import TOKEN, db_rows, drop, load, make_ids, outcome, read_results, wait_for
from daemon_helpers import write_config as write_test_config

from orchestrator.core.model import BatchState
from orchestrator.daemon.runner import Runner
from orchestrator.daemon.service import Service
from orchestrator.sandbox import Sandbox
from orchestrator.store.sqlite import Store

# (stage, when): "persisted" = just after the batch entered that state in the database;
# "acted" = just after that stage's remote/file side effect, before its outcome was saved.
KILL_POINTS = [
    ("queued", "persisted"),
    ("creating", "persisted"),
    ("creating", "acted"),
    ("uploading", "persisted"),
    ("uploading", "acted"),
    ("waiting", "persisted"),
    ("waiting", "acted"),
    ("downloading", "persisted"),
    ("downloading", "acted"),
    ("delivering", "persisted"),
    ("delivering", "acted"),
]

ACTIONS = {"creating": "_create", "uploading": "_upload", "waiting": "_act",
           "downloading": "_download", "delivering": "_deliver"}


@pytest.mark.parametrize(("stage", "when"), KILL_POINTS, ids=[f"{s}-{w}" for s, w in KILL_POINTS])
async def test_stop_at_every_stage_then_resume(
    tmp_path: Path, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, stage: str, when: str
) -> None:
    config = load(write_test_config(tmp_path, sandbox.base_url))
    ids = make_ids(42, 120)
    service = Service(config, TOKEN, stop_grace_s=0)
    tripped = anyio.Event()

    def trip() -> None:
        tripped.set()
        service.stop()

    if when == "persisted":
        real_apply = Store.apply
        real_form = Store.form_batch

        async def apply(self: Store, batch: Any, decision: Any, **kw: Any) -> Any:
            result = await real_apply(self, batch, decision, **kw)
            entered = str(decision.to_state) == stage and str(batch.state) != stage
            if entered and not tripped.is_set():
                trip()
                await anyio.sleep_forever()
            return result

        async def form_batch(self: Store, *args: Any, **kw: Any) -> Any:
            result = await real_form(self, *args, **kw)
            if stage == "queued" and not tripped.is_set():
                trip()
                await anyio.sleep_forever()
            return result

        monkeypatch.setattr(Store, "apply", apply)
        monkeypatch.setattr(Store, "form_batch", form_batch)
    else:
        name = ACTIONS[stage]
        real: Callable[..., Awaitable[Any]] = getattr(Runner, name)

        async def acted(self: Runner, batch: Any, *args: Any) -> Any:
            result = await real(self, batch, *args)
            if str(batch.state) == stage and not tripped.is_set():
                trip()
                await anyio.sleep_forever()
            return result

        monkeypatch.setattr(Runner, name, acted)

    async with anyio.create_task_group() as group:
        group.start_soon(service.run)
        drop(tmp_path, "tweets", "ids.txt", ids)
        with anyio.fail_after(30):
            await tripped.wait()
    monkeypatch.undo()
    assert outcome(tmp_path, "tweets", "ids.txt") is None or stage == "delivering"

    restarted = Service(config, TOKEN)
    async with anyio.create_task_group() as group:
        group.start_soon(restarted.run)
        await wait_for(lambda: outcome(tmp_path, "tweets", "ids.txt") == "delivered"
                       and not list((tmp_path / "state" / "spool").iterdir()),
                       what="delivery after restart")
        restarted.stop()

    assert read_results(tmp_path, "tweets", "ids") == sandbox.expected_results("tweets", ids)
    assert len(sandbox.jobs()) == 1, "a restart must adopt, never duplicate, the remote job"
    assert sorted(p.name for p in (tmp_path / "outbox" / "tweets").iterdir()) == [
        "ids.jsonl", "ids.manifest.json"]
    assert [r["state"] for r in db_rows(tmp_path, "SELECT state FROM batches")] == ["done"]


def _spawn(config_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "X_BEARER_TOKEN": TOKEN}
    env.pop("NOTIFY_SOCKET", None)
    with open(config_path.parent / "daemon.log", "ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "run", "--config", str(config_path)],
            env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )


SIGKILL_STAGES = ["creating", "uploading", "waiting", "downloading"]


@pytest.mark.parametrize("stage", SIGKILL_STAGES)
async def test_sigkill_at_a_stage_then_restart(
    tmp_path: Path, sandbox: Sandbox, stage: str
) -> None:
    config_path = write_test_config(tmp_path, sandbox.base_url)
    # Hold the daemon in the stage long enough to be seen there and killed.
    fault_endpoint = {"creating": "create", "uploading": "upload",
                      "downloading": "download"}.get(stage)
    if fault_endpoint:
        sandbox.faults.add(fault_endpoint, "slow", count=1, delay=3.0)
    else:
        sandbox.config.processing_time_s = 3.0
    ids = make_ids(77, 200)
    process = _spawn(config_path)
    try:
        drop(tmp_path, "users", "kill-me.txt", ids)
        await wait_for(
            lambda: any(r["state"] == stage for r in db_rows(
                tmp_path, "SELECT state FROM batches")), timeout=30, what=f"stage {stage}")
        if stage != "creating":
            await anyio.sleep(0.3)  # let the request reach the server: mid-flight, not before
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    sandbox.config.processing_time_s = 0.2
    again = _spawn(config_path)
    try:
        await wait_for(lambda: outcome(tmp_path, "users", "kill-me.txt") == "delivered",
                       timeout=60, what="delivery after SIGKILL")
        again.send_signal(signal.SIGTERM)
        assert again.wait(timeout=20) == 0
    finally:
        if again.poll() is None:
            again.kill()
    assert read_results(tmp_path, "users", "kill-me") == sandbox.expected_results("users", ids)
    assert len(sandbox.jobs()) == 1
    assert db_rows(tmp_path, "PRAGMA integrity_check")[0]["integrity_check"] == "ok"
    assert str(BatchState.DONE) == db_rows(tmp_path, "SELECT state FROM batches")[0]["state"]
