"""The command line as an operator meets it: run, status, demo, per-type lanes, packaging."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from daemon_helpers import (
    TOKEN,
    db_rows,
    drained,
    drop,
    load,
    make_ids,
    outcome,
    running_service,
    wait_for,
    write_config,
)

from orchestrator.cli.main import main
from orchestrator.sandbox import Sandbox

REPO = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **(env or {})}, check=False,
    )


async def test_status_shows_queue_outcomes_and_never_a_signed_url(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = write_config(tmp_path, sandbox.base_url)
    sandbox.config.processing_time_s = 30.0  # keep one job in flight while we look
    async with running_service(load(config_path)):
        drop(tmp_path, "tweets", "done.txt", ["not-an-id"])
        drop(tmp_path, "users", "slow.txt", make_ids(1, 10))
        # Not drained on purpose: the users job stays in flight while `status` looks.
        await wait_for(lambda: outcome(tmp_path, "tweets", "done.txt") == "rejected")
        await wait_for(lambda: db_rows(tmp_path, "SELECT state FROM batches")
                       == [{"state": "waiting"}], what="the users job waiting remotely")
        text = _status_text(config_path)
        assert "daemon: running" in text
        assert "users" in text and "slow.txt" in text and "waiting" in text
        assert "done.txt: rejected" in text
        assert "results must be downloaded within" in text
        assert "X-Goog" not in text and "Signature" not in text and "http" not in text
        capsys.readouterr()
        assert main(["status", "--config", str(config_path), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["current"][0]["state"] == "waiting"
        assert report["queue"]["tweets"]["rejected"] == 1
        assert "X-Goog" not in json.dumps(report)


def _status_text(config_path: Path) -> str:
    result = run_cli("status", "--config", str(config_path))
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_status_of_a_fresh_install(tmp_path: Path) -> None:
    config_path = write_config(tmp_path, "http://127.0.0.1:9")
    result = run_cli("status", "--config", str(config_path))
    assert result.returncode == 0
    assert "daemon: not running" in result.stdout
    assert "no state database yet" in result.stdout


def test_bad_config_exits_2_and_names_the_key(tmp_path: Path) -> None:
    config_path = tmp_path / "config.toml"
    config_path.write_text('[jobs]\nconcurency = "global"\n')
    for command in ("run", "status", "check-config"):
        result = run_cli(command, "--config", str(config_path), env={"X_BEARER_TOKEN": TOKEN})
        assert result.returncode == 2, (command, result.stderr)
        assert "jobs.concurency" in result.stderr


async def test_second_run_on_the_same_state_dir_is_refused(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config_path = write_config(tmp_path, sandbox.base_url)
    async with running_service(load(config_path)):
        result = await anyio.to_thread.run_sync(
            lambda: run_cli("run", "--config", str(config_path), env={"X_BEARER_TOKEN": TOKEN})
        )
    assert result.returncode == 2
    assert f"PID {os.getpid()}" in result.stderr
    assert "state" in result.stderr


def test_run_without_a_token_exits_2_and_says_where_to_put_it(tmp_path: Path) -> None:
    config_path = write_config(tmp_path, "http://127.0.0.1:9")
    env = {k: v for k, v in os.environ.items()
           if k not in ("X_BEARER_TOKEN", "CREDENTIALS_DIRECTORY")}
    result = subprocess.run([sys.executable, "-m", "orchestrator", "run", "--config",
                             str(config_path)], capture_output=True, text=True, env=env,
                            timeout=60, check=False)
    assert result.returncode == 2
    assert "X_BEARER_TOKEN" in result.stderr and "bearer-token" in result.stderr


async def test_per_type_concurrency_runs_a_tweets_and_a_users_job_side_by_side(
    tmp_path: Path, make_sandbox: Callable[..., Sandbox]
) -> None:
    async with make_sandbox(concurrency="per-type", processing_time_s=1.5, seed=0) as sandbox:
        cfg = load(write_config(tmp_path, sandbox.base_url, concurrency="per-type"))
        async with running_service(cfg) as service:
            drop(tmp_path, "tweets", "t.txt", make_ids(1, 20))
            drop(tmp_path, "users", "u.txt", make_ids(2, 20))
            await drained(service)
            assert (
                outcome(tmp_path, "tweets", "t.txt") == "delivered"
                and outcome(tmp_path, "users", "u.txt") == "delivered"
            )
        jobs = sandbox.jobs()
    assert len(jobs) == 2
    statuses = [status for _m, _p, status in sandbox.request_log]
    assert 409 not in statuses
    # Both were created before either could have completed: they ran at the same time.
    created = sorted(job["created_at"] for job in jobs)
    assert created[0][:19] >= created[1][:19][:17]  # same minute at least
    finished = json.loads((tmp_path / "outbox/users/u.manifest.json").read_text())
    tweets = json.loads((tmp_path / "outbox/tweets/t.manifest.json").read_text())
    assert finished["timings"]["uploaded_at"] < tweets["timings"]["completed_at"]
    assert tweets["timings"]["uploaded_at"] < finished["timings"]["completed_at"]


def test_demo_runs_end_to_end_and_exits_0(tmp_path: Path) -> None:
    result = run_cli("demo", "--workdir", str(tmp_path / "demo"), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "matches sandbox truth" in result.stdout
    assert "rejected" in result.stdout
    log_path = (tmp_path / "demo" / "daemon.log").resolve()
    assert f"daemon log (in the work folder) {log_path}" in result.stdout  # a full path
    log = log_path.read_text()
    assert "X-Goog-Signature" not in log and "sandbox-token" not in log


def test_wheel_ships_the_migrations(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--quiet", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    wheel = next(tmp_path.glob("compliance_orchestrator-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(n for n in names if n.startswith("orchestrator/migrations/"))
    expected = sorted(  # SQLite's, and PostgreSQL's in migrations/postgresql/
        f"orchestrator/migrations/{p.relative_to(REPO / 'migrations').as_posix()}"
        for p in (REPO / "migrations").rglob("*.sql")
    )
    assert "orchestrator/migrations/postgresql/0005_initial.sql" in expected
    assert shipped == expected and expected
    assert "orchestrator/sandbox/server.py" in names
