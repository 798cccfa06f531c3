"""Stop the daemon at every stage of a job's life, start it again, get exactly one result.

Two ways to die: an in-process stop at a precise line (right after a state was persisted,
or right after a remote side effect but before its result was persisted), and a real
SIGKILL of a `run` subprocess while the database shows a given stage. The in-process stop
is injected at the store, the adapter every outcome passes through on its way to disk.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from daemon_helpers import TOKEN, db_rows, drop, load, make_ids, outcome, read_results, wait_for
from daemon_helpers import write_config as write_test_config

from orchestrator.core.model import BatchState
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

    real_apply = Store.apply
    real_form = Store.form_batch

    async def apply(self: Store, batch: Any, decision: Any, **kw: Any) -> Any:
        leaving = str(batch.state) == stage and str(decision.to_state) != stage
        if leaving and when == "acted" and not tripped.is_set():
            # The stage's action (a POST, the upload, the poll that saw the job complete, the
            # download, the outbox writes) is done; its outcome is about to be saved: die.
            trip()
            await anyio.sleep_forever()
        result = await real_apply(self, batch, decision, **kw)
        entered = str(decision.to_state) == stage and str(batch.state) != stage
        if entered and when == "persisted" and not tripped.is_set():
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

    async with anyio.create_task_group() as group:
        group.start_soon(service.run)
        drop(tmp_path, "tweets", "ids.txt", ids)
        with anyio.fail_after(30):
            await tripped.wait()
    monkeypatch.undo()
    assert outcome(tmp_path, "tweets", "ids.txt") is None or stage == "delivering"

    with anyio.fail_after(30):  # burst mode: the restarted daemon stops once all is done
        await Service(config, TOKEN).run(until_idle=True)
    assert outcome(tmp_path, "tweets", "ids.txt") == "delivered", "delivery after restart"
    assert not list((tmp_path / "state" / "spool").iterdir())

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
        if fault_endpoint and stage != "creating":
            # The slow fault is taken when the request arrives: from then on it is mid-flight.
            await wait_for(lambda: not sandbox.faults.pending(), what=f"{fault_endpoint} sent")
        elif stage == "waiting":
            await wait_for(lambda: any(
                method == "GET" and path.startswith("/2/compliance/jobs/")
                for method, path, _status in sandbox.request_log), what="a poll answered")
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
