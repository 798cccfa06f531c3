"""Producers choose file names; operators read them in `status`, `jobs` and `requeue`. Control
characters (C0, C1, DEL) and bidi overrides in a name must reach the terminal escaped, while
`--json` keeps the exact name."""

from __future__ import annotations

from pathlib import Path

import pytest
from admin_helpers import db, make_batch, offline_config, run_cli

from orchestrator.files.inbox import printable

HOSTILE = "evil\x1b]0;pwned\x07\x1b[2J\u202etxt.exe\x9b31m\x7f.txt"
RAW_CONTROLS = ("\x1b", "\x07", "\u202e", "\x9b", "\x7f")


def assert_escaped(out: str) -> None:
    for char in RAW_CONTROLS:
        assert char not in out, f"{char!r} reached the terminal"
    assert "evil\\x1b]0;pwned\\x07\\x1b[2J\\u202etxt.exe\\x9b31m\\x7f.txt" in out


def test_printable_escapes_controls_and_bidi_but_keeps_ordinary_text() -> None:
    assert printable("café 日本.txt") == "café 日本.txt"
    assert printable("a\nb\tc\x00") == "a\\x0ab\\x09c\\x00"
    assert printable("\u2066x\u2069\u200f") == "\\u2066x\\u2069\\u200f"


async def test_status_and_jobs_escape_a_hostile_file_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    await make_batch(tmp_path, name=HOSTILE)
    status = run_cli(capsys, "status", "--config", config)
    assert status.code == 0, status.err
    assert_escaped(status.out)
    jobs = run_cli(capsys, "jobs", "--config", config)
    assert jobs.code == 0, jobs.err
    assert_escaped(jobs.out)
    exact = run_cli(capsys, "jobs", "--config", config, "--json")
    assert exact.json["jobs"][0]["files"] == [HOSTILE]  # JSON: the exact name


async def test_status_escapes_a_hostile_rejection_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    await make_batch(tmp_path, name=HOSTILE)
    db(tmp_path, "UPDATE inputs SET state = 'rejected', finished_at = '2026-01-01T00:00:00Z',"
       " error_json = json_object('reason', ?)", (f"{HOSTILE}: bad",))
    status = run_cli(capsys, "status", "--config", config)
    assert status.code == 0, status.err
    assert_escaped(status.out)
