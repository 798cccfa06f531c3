"""`pause` / `resume`: a row in the state database (survives a restart), shown by `status`,
idempotent, with `--json` and exit codes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from admin_helpers import arun_cli, db, make_batch, offline_config, run_cli

from orchestrator.cli.main import build_parser


async def test_pause_is_stored_shown_by_status_and_lifted_by_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    await make_batch(tmp_path)
    paused = await arun_cli(capsys, "pause", "--config", config, "--reason", "disk swap", "--json")
    assert paused.code == 0, paused.err
    assert paused.json["ok"] and paused.json["paused"] and not paused.json["already"]
    since = paused.json["since"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", since)
    assert [e["kind"] for e in db(tmp_path, "SELECT kind FROM events WHERE kind LIKE"
                                  " 'operator.%'")] == ["operator.pause"]

    status = await arun_cli(capsys, "status", "--config", config)
    assert f"PAUSED since {since} by operator (disk swap)" in status.out
    assert (await arun_cli(capsys, "status", "--config", config, "--json")).json["paused"] == {
        "since": since, "by": "operator", "reason": "disk swap"}

    again = await arun_cli(capsys, "pause", "--config", config)
    assert again.code == 0 and f"already paused since {since}" in again.out

    resumed = await arun_cli(capsys, "resume", "--config", config, "--json")
    assert resumed.code == 0, resumed.err
    assert resumed.json == {"ok": True, "paused": False, "already": False, "daemon_pid": None,
                            "paused_since": since}
    assert "PAUSED" not in (await arun_cli(capsys, "status", "--config", config)).out
    assert (await arun_cli(capsys, "status", "--config", config, "--json")).json["paused"] is None
    nothing = await arun_cli(capsys, "resume", "--config", config)
    assert nothing.code == 0 and "not paused" in nothing.out
    assert [e["kind"] for e in db(tmp_path, "SELECT kind FROM events WHERE kind LIKE"
                                  " 'operator.%' ORDER BY id")] == [
        "operator.pause", "operator.resume"]


def test_pause_without_a_state_database_is_a_runtime_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    result = run_cli(capsys, "pause", "--config", config, "--json")
    assert result.code == 1
    assert not result.json["ok"] and "no state database" in result.json["error"]


def test_pause_needs_a_config(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["pause"])
    assert exited.value.code == 2
