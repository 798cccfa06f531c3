"""Preflight: folders checked before anything is created; one authenticated call at start-up
(a refused token ends the start with exit 2, an unreachable X only warns)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from daemon_helpers import TOKEN, load, running_service, write_config
from structlog.testing import capture_logs

from orchestrator.config import Config
from orchestrator.daemon.preflight import Reach, check_folders, folder_problem, probe_api
from orchestrator.daemon.service import Service
from orchestrator.errors import ConfigError
from orchestrator.sandbox import Sandbox


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def strict_config(tmp_path: Path, base_url: str) -> Config:
    """The test config without create_missing: folders must exist."""
    path = write_config(tmp_path, base_url)
    path.write_text(path.read_text().replace("create_missing = true\n", ""))
    return load(path)


def test_folder_problems_name_what_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert folder_problem("paths.inbox", tmp_path, False) is None
    assert "does not exist" in (folder_problem("paths.inbox", tmp_path / "no", False) or "")
    assert folder_problem("paths.inbox", tmp_path / "no" / "deeper", True) is None
    assert "is not a directory" in (folder_problem("paths.outbox", tmp_path / "file", True) or "")
    under_file = folder_problem("paths.outbox", tmp_path / "file" / "out", True) or ""
    assert "cannot be created" in under_file and str(tmp_path / "file") in under_file


def test_check_folders_lists_every_problem(tmp_path: Path) -> None:
    config = strict_config(tmp_path, "http://127.0.0.1:9")
    with pytest.raises(ConfigError) as caught:
        check_folders(config)
    for key in ("paths.inbox", "paths.outbox", "paths.state_dir"):
        assert key in str(caught.value)


async def test_probe_ok_refused_unreachable(tmp_path: Path, sandbox: Sandbox) -> None:
    config = load(write_config(tmp_path, sandbox.base_url))
    assert (await probe_api(config, TOKEN)).reach is Reach.OK
    refused = await probe_api(config, "not-the-token-0123456789")
    assert refused.reach is Reach.REFUSED and "401" in refused.detail
    assert "not-the-token" not in refused.detail
    offline = load(write_config(tmp_path, f"http://127.0.0.1:{closed_port()}"))
    assert (await probe_api(offline, TOKEN)).reach is Reach.UNREACHABLE


async def test_daemon_refuses_missing_folders_and_creates_nothing(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config = strict_config(tmp_path, sandbox.base_url)
    with pytest.raises(ConfigError, match=r"paths\.inbox .* does not exist"):
        await Service(config, TOKEN).run()
    assert not (tmp_path / "inbox").exists() and not (tmp_path / "state").exists()
    assert sandbox.request_log == []


async def test_daemon_starts_when_x_is_unreachable_and_warns(tmp_path: Path) -> None:
    config = load(write_config(tmp_path, f"http://127.0.0.1:{closed_port()}"))
    with capture_logs() as events:
        async with running_service(config) as service:
            assert service.phase == "running"
    assert any(e["event"] == "service.api_unreachable" for e in events)


async def test_daemon_with_a_refused_token_never_gets_ready(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config = load(write_config(tmp_path, sandbox.base_url))
    ready = anyio.Event()
    with pytest.raises(ConfigError, match="X refused the bearer token"):
        await Service(config, "revoked-token-0123456789").run(on_ready=ready.set)
    assert not ready.is_set()


async def test_run_with_a_refused_token_exits_2_without_the_token(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config_path = write_config(tmp_path, sandbox.base_url)
    env = {**os.environ, "X_BEARER_TOKEN": "revoked-token-0123456789"}
    env.pop("CREDENTIALS_DIRECTORY", None)
    result = await anyio.to_thread.run_sync(lambda: subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", "--config", str(config_path)],
        capture_output=True, text=True, env=env, timeout=60, check=False))
    assert result.returncode == 2, result.stderr
    assert "X refused the bearer token" in result.stderr
    assert "revoked-token-0123456789" not in result.stderr + result.stdout
