"""kill -9 of the daemon while a hook runs: after the restart the hook runs again with the same
idempotency key (at-least-once), and its row ends done."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from daemon_helpers import TOKEN, db_rows, drop, make_ids, wait_for, write_config
from hook_helpers import add_entries, envs, hook_script

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


async def test_kill_9_during_a_hook_runs_it_again_after_restart_with_the_same_key(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    folder = tmp_path / "hook"
    command = hook_script(folder)
    (folder / "slow").write_text("60")
    config_path = add_entries(write_config(tmp_path, sandbox.base_url), "hooks",
                              {"on": "delivered", "command": command, "timeout_s": 120})
    daemon = _spawn(config_path)
    try:
        drop(tmp_path, "tweets", "k.txt", make_ids(12, 20))
        await wait_for(lambda: bool(list(folder.glob("started-*"))), timeout=60,
                       what="the hook to start")
        assert [r["state"] for r in db_rows(tmp_path, "SELECT state FROM hook_runs")] == [
            "running"]
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)
    [started] = folder.glob("started-*")
    os.killpg(int(started.read_text()), signal.SIGKILL)  # the orphan (own session), for tidiness
    (folder / "slow").unlink()
    (folder / "loud").write_text("")  # 100 KB of output: the log keeps the last 4 KB
    started.unlink()
    daemon = _spawn(config_path)
    try:
        await wait_for(lambda: bool(list(folder.glob("finished-*"))), timeout=60,
                       what="the hook to run again")
        await wait_for(lambda: [r["state"] for r in db_rows(
            tmp_path, "SELECT state FROM hook_runs")] == ["done"], what="the run to be done")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    [run] = db_rows(tmp_path, "SELECT * FROM hook_runs")
    keys = [e["COMPLIANCE_IDEMPOTENCY_KEY"] for e in envs(folder)]
    assert len(keys) == 2 and set(keys) == {run["idempotency_key"]}
    assert run["attempts"] == 1  # the interrupted attempt is not counted against the hook
    log = (tmp_path / "daemon.log").read_text()
    assert "hook.rerun_after_restart" in log
    [output] = [json.loads(line)["output"] for line in log.splitlines()
                if '"hook.output"' in line]
    assert len(output) <= 4096 and output.endswith("done\n")
    assert "abcdef0123" not in log and "Bearer <redacted>" in output  # redacted
