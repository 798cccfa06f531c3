"""Command hooks end to end: the real daemon against the sandbox on 127.0.0.1 runs real hook
processes; their rows, environment, retries, timeouts and independence from the job lane."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from daemon_helpers import (
    TOKEN,
    db_rows,
    drop,
    load,
    make_ids,
    outcome,
    running_service,
    wait_for,
    write_config,
)
from hook_helpers import add_entries, envs, hook_script

from orchestrator.sandbox import Sandbox


def _runs(workdir: Path) -> list[dict[str, object]]:
    return db_rows(workdir, "SELECT * FROM hook_runs ORDER BY id")


def _final(workdir: Path, count: int = 1) -> bool:
    runs = _runs(workdir)
    return len(runs) >= count and all(r["state"] in ("done", "failed") for r in runs)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie is dead
    except FileNotFoundError:
        return True


async def test_a_delivered_hook_gets_paths_counts_and_key_but_no_token(
    tmp_path: Path, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("X_BEARER_TOKEN", TOKEN)  # in the daemon's environment...
    monkeypatch.setenv("SOME_OTHER_SECRET", "hunter2")
    folder = tmp_path / "hook"
    config = load(add_entries(write_config(tmp_path, sandbox.base_url), "hooks",
                              {"on": "delivered", "command": hook_script(folder),
                               "timeout_s": 30, "max_attempts": 2}))
    async with running_service(config):
        drop(tmp_path, "tweets", "mine.txt", make_ids(3, 50))
        await wait_for(lambda: _final(tmp_path), what="the hook run to finish")
    [run] = _runs(tmp_path)
    assert run["state"] == "done" and run["attempts"] == 1 and run["event"] == "delivered"
    [batch] = db_rows(tmp_path, "SELECT key FROM batches")
    [env] = envs(folder)
    assert env["COMPLIANCE_IDEMPOTENCY_KEY"] == f"{run['input_id']}-{batch['key']}"
    assert env["COMPLIANCE_EVENT"] == "delivered"
    assert env["COMPLIANCE_JOB_TYPE"] == "tweets" and env["COMPLIANCE_INPUT"] == "mine.txt"
    assert Path(env["COMPLIANCE_RESULTS"]) == tmp_path / "outbox" / "tweets" / "mine.jsonl"
    assert Path(env["COMPLIANCE_MANIFEST"]).is_file()
    assert env["COMPLIANCE_SUBMITTED"] == "50" and int(env["COMPLIANCE_AFFECTED"]) >= 0
    # ...but never in the hook's: only PATH/LANG/TZ are inherited.
    assert "X_BEARER_TOKEN" not in env and "SOME_OTHER_SECRET" not in env
    assert TOKEN not in repr(env) and "hunter2" not in repr(env)
    assert set(env) - {"PATH", "LANG", "TZ"} <= {k for k in env if k.startswith("COMPLIANCE_")}
    assert env["PATH"] == os.environ["PATH"]


async def test_a_failing_hook_is_retried_with_backoff_then_done(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    folder = tmp_path / "hook"
    command = hook_script(folder)
    (folder / "fail-once").write_text("")
    config = load(add_entries(write_config(tmp_path, sandbox.base_url), "hooks",
                              {"on": "delivered", "command": command, "max_attempts": 3,
                               "backoff_initial_s": 0.1, "backoff_max_s": 0.2}))
    async with running_service(config) as service:
        drop(tmp_path, "users", "u.txt", make_ids(4, 20))
        await wait_for(lambda: _final(tmp_path), what="the hook run to finish")
        text = service.metrics.registry.get_sample_value(
            "compliance_orchestrator_hook_runs_total",
            {"kind": "hook", "on": "delivered", "outcome": "retry"})
        assert text == 1.0
    [run] = _runs(tmp_path)
    assert run["state"] == "done" and run["attempts"] == 2
    assert run["last_error"] == "exit status 3"
    keys = {e["COMPLIANCE_IDEMPOTENCY_KEY"] for e in envs(folder)}
    assert len(envs(folder)) == 2 and len(keys) == 1  # the same key on the retry


async def test_a_hook_past_its_timeout_is_killed_with_its_whole_process_group(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    folder = tmp_path / "hook"
    command = hook_script(folder)
    (folder / "child").write_text("")
    (folder / "slow").write_text("60")
    config = load(add_entries(write_config(tmp_path, sandbox.base_url), "hooks",
                              {"on": "delivered", "command": command, "timeout_s": 1,
                               "max_attempts": 1}))
    async with running_service(config):
        drop(tmp_path, "tweets", "t.txt", make_ids(5, 10))
        await wait_for(lambda: _final(tmp_path), what="the hook run to time out")
    [run] = _runs(tmp_path)
    assert run["state"] == "failed" and "timed out" in str(run["last_error"])
    child = int((folder / "child.pid").read_text())
    await wait_for(lambda: _gone(child), timeout=10, what="the hook's child to be killed")
    assert not list(folder.glob("finished-*"))


async def test_a_slow_hook_never_delays_the_next_job(tmp_path: Path, sandbox: Sandbox) -> None:
    folder = tmp_path / "hook"
    command = hook_script(folder)
    (folder / "slow").write_text("5")
    config = load(add_entries(write_config(tmp_path, sandbox.base_url), "hooks",
                              {"on": "delivered", "command": command, "timeout_s": 30}))
    async with running_service(config):
        drop(tmp_path, "tweets", "first.txt", make_ids(6, 10))
        await wait_for(lambda: bool(list(folder.glob("started-*"))), what="the slow hook")
        drop(tmp_path, "tweets", "second.txt", make_ids(7, 10))
        await wait_for(lambda: outcome(tmp_path, "tweets", "second.txt") is not None,
                       what="the second file's delivery")
        # The second file's job was created and delivered while the first hook still ran.
        assert not list(folder.glob("finished-*")), "delivered before the slow hook ended"
        assert len(db_rows(tmp_path, "SELECT id FROM batches")) == 2
        await wait_for(lambda: _final(tmp_path, 2), timeout=40, what="both hooks")
    assert [r["state"] for r in _runs(tmp_path)] == ["done", "done"]


async def test_a_rejected_input_runs_the_rejected_hook_with_its_error_record(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    folder = tmp_path / "hook"
    config = load(add_entries(
        write_config(tmp_path, sandbox.base_url), "hooks",
        {"on": "rejected", "command": hook_script(folder)},
        {"on": "delivered", "command": hook_script(tmp_path / "unused"), "job_type": "users"},
    ))
    async with running_service(config):
        drop(tmp_path, "tweets", "bad.txt", ["123", "not-an-id", "456"])
        drop(tmp_path, "tweets", "good.txt", make_ids(8, 5))  # no hook: tweets are filtered
        await wait_for(lambda: _final(tmp_path), what="the rejected hook")
        await wait_for(lambda: outcome(tmp_path, "tweets", "good.txt") is not None,
                       what="good.txt")
    [run] = _runs(tmp_path)
    assert run["event"] == "rejected" and run["state"] == "done"
    [env] = envs(folder)
    assert env["COMPLIANCE_IDEMPOTENCY_KEY"] == f"{run['input_id']}-rejected"
    assert env["COMPLIANCE_INPUT"] == "bad.txt"
    error = Path(env["COMPLIANCE_ERROR"])
    assert error.is_file() and error.name.endswith(".error.json")
    assert env["COMPLIANCE_REASON"]


async def test_a_refused_token_runs_the_paused_hook_once_with_the_reason(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    folder = tmp_path / "hook"
    config = load(add_entries(write_config(tmp_path, sandbox.base_url), "hooks",
                              {"on": "paused", "command": hook_script(folder)}))
    async with running_service(config):
        sandbox.config.token = "revoked-" + TOKEN  # refused from just after READY
        drop(tmp_path, "tweets", "p.txt", make_ids(13, 5))
        await wait_for(lambda: _final(tmp_path), what="the paused hook")
        await wait_for(lambda: [s for _m, _p, s in sandbox.request_log].count(401) >= 3,
                       what="more refused calls")
    [run] = _runs(tmp_path)  # once per pause, not once per refused call
    assert run["event"] == "paused" and run["state"] == "done"
    [env] = envs(folder)
    assert env["COMPLIANCE_EVENT"] == "paused" and env["COMPLIANCE_REASON"]
    assert env["COMPLIANCE_IDEMPOTENCY_KEY"].startswith("paused-")
    assert TOKEN not in repr(env)


async def test_a_stop_kills_a_running_hook_and_the_next_start_runs_it_again(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    folder = tmp_path / "hook"
    command = hook_script(folder)
    (folder / "slow").write_text("60")
    config = load(add_entries(write_config(tmp_path, sandbox.base_url), "hooks",
                              {"on": "delivered", "command": command, "timeout_s": 120}))
    async with running_service(config):
        drop(tmp_path, "tweets", "s.txt", make_ids(14, 5))
        await wait_for(lambda: bool(list(folder.glob("started-*"))), what="the slow hook")
    [started] = folder.glob("started-*")
    await wait_for(lambda: _gone(int(started.read_text())), timeout=10,
                   what="the hook to be killed by the stop")
    assert [r["state"] for r in _runs(tmp_path)] == ["running"]
    (folder / "slow").unlink()
    async with running_service(config):
        await wait_for(lambda: _final(tmp_path), what="the hook run again")
    assert [r["state"] for r in _runs(tmp_path)] == ["done"]
    assert len({e["COMPLIANCE_IDEMPOTENCY_KEY"] for e in envs(folder)}) == 1
