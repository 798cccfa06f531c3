"""`backup --to DIR`: while the daemon runs; the copy is a usable state database."""

from __future__ import annotations

import json
import re
import sqlite3
import stat
from pathlib import Path

import anyio
import pytest
from daemon_helpers import drained, drop, load, make_ids, running_service, write_config

from orchestrator.cli.main import main
from orchestrator.sandbox import Sandbox


def _command_output(captured: str) -> str:
    """The command's own output: the daemon in this process may log to stdout meanwhile."""
    lines = [line for line in captured.splitlines() if not _LOG_LINE.match(line)]
    return "\n".join(lines).strip()


_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[")


async def test_backup_while_the_daemon_runs_prints_a_private_usable_copy(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = write_config(tmp_path, sandbox.base_url)
    async with running_service(load(config_path)) as service:
        drop(tmp_path, "tweets", "a.txt", make_ids(3, 10))
        await drained(service)
        capsys.readouterr()
        code = await anyio.to_thread.run_sync(
            main, ["backup", "--config", str(config_path), "--to", str(tmp_path / "bk")])
        text = _command_output(capsys.readouterr().out)
        code_json = await anyio.to_thread.run_sync(
            main, ["backup", "--config", str(config_path), "--to", str(tmp_path / "bk2"),
                   "--json"])
        answer = json.loads(_command_output(capsys.readouterr().out))
    assert code == 0 and code_json == 0
    path = Path(text)
    assert path.parent == tmp_path / "bk" and path.name.startswith("state-")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert answer["ok"] is True and Path(answer["path"]).parent == tmp_path / "bk2"
    assert answer["bytes"] == Path(answer["path"]).stat().st_size
    copy = sqlite3.connect(path)
    rows = copy.execute("SELECT name, state FROM inputs").fetchall()
    copy.close()
    assert rows == [("a.txt", "delivered")]


def test_backup_without_a_database_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = write_config(tmp_path, "http://127.0.0.1:9")
    assert main(["backup", "--config", str(config_path), "--to", str(tmp_path / "bk")]) == 1
    assert "no state database" in capsys.readouterr().err
    assert not (tmp_path / "bk").exists()
