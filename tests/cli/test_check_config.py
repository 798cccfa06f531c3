"""`check-config`: a summary of the effective config without the token, exit 2 on a bad one."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from orchestrator.cli.check_config import check_config_command

TOKEN = "AAAAAAAAAAAAAAAAAAAAAMLheAAAAAAA0%2BuSeid%2BULvsea4JtiGRiSDSJSI%3DEUifiRBkKG5E2"


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- check-config ------------------------------------------------------------------------------


def test_check_config_ok_prints_a_summary_without_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setenv("X_BEARER_TOKEN", TOKEN)
    path = write(tmp_path, '[api]\nbase_url = "http://127.0.0.1:9999"\n[paths]\ninbox = "in"\n')
    assert check_config_command(argparse.Namespace(config=path)) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"config OK: {path}\n")
    assert str(tmp_path / "in") in out
    assert "http://127.0.0.1:9999" in out
    assert "environment variable X_BEARER_TOKEN" in out
    assert TOKEN not in out + err


def test_check_config_bad_config_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "[jobs]\nmax_attempts = -1\n")
    assert check_config_command(argparse.Namespace(config=path)) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "jobs.max_attempts = -1" in err


def test_check_config_without_a_token_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.delenv("X_BEARER_TOKEN", raising=False)
    assert check_config_command(argparse.Namespace(config=write(tmp_path, ""))) == 2
    assert "no bearer token found" in capsys.readouterr().err
