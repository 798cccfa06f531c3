"""deploy/datasets/: the weekly re-check units pass `systemd-analyze verify`, and the service
runs exactly the `submit` command the CLI accepts."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.cli.main import build_parser

REPO = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
FOLDER = REPO / "deploy" / "datasets"
SERVICE = FOLDER / "compliance-orchestrator-submit@.service"
TIMER = FOLDER / "compliance-orchestrator-submit@.timer"
VENV_SCRIPT = "/opt/compliance-orchestrator/venv/bin/compliance-orchestrator"

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed")


def exec_start() -> str:
    (line,) = [x for x in SERVICE.read_text().splitlines() if x.startswith("ExecStart=")]
    return line.removeprefix("ExecStart=")


@needs_analyze
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    stub = tmp_path / "compliance-orchestrator"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    service = tmp_path / "compliance-orchestrator-submit@archive.service"
    service.write_text(SERVICE.read_text().replace(VENV_SCRIPT, str(stub)))
    timer = tmp_path / "compliance-orchestrator-submit@archive.timer"
    timer.write_text(TIMER.read_text())
    env = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "", "LC_ALL": "C.UTF-8"}
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", "--recursive-errors=no", str(service),
         str(timer)], capture_output=True, text=True, env=env, timeout=60, check=False)
    ours = [line for line in (result.stdout + result.stderr).splitlines()
            if "compliance-orchestrator-submit@" in line
            # the env file and the producer user exist only on a configured host
            and "EnvironmentFile" not in line and "User" not in line]
    assert ours == [], result.stdout + result.stderr


def test_the_service_runs_a_submit_the_cli_accepts() -> None:
    argv = shlex.split(exec_start())
    assert argv[0] == VENV_SCRIPT
    filled = [a.replace("${DATASET_FILE}", "/srv/archive/tweets.txt")
              .replace("${DATASET_TYPE}", "tweets").replace("%i", "archive") for a in argv[1:]]
    args = build_parser().parse_args(filled)
    assert (args.command, args.type, args.dataset) == ("submit", "tweets", "archive")
    env_example = (FOLDER / "archive.env.example").read_text()
    assert "DATASET_FILE=" in env_example and "DATASET_TYPE=" in env_example
