"""`check-config`: a summary of the effective config without the token, exit 2 on a bad one."""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

import anyio
import pytest
from daemon_helpers import TOKEN as SANDBOX_TOKEN

from orchestrator.cli.check_config import check_config_command
from orchestrator.sandbox import Sandbox

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
    path = write(tmp_path, '[api]\nbase_url = "http://127.0.0.1:9999"\n[paths]\ninbox = "in"\n'
                 'outbox = "out"\nstate_dir = "state"\n')
    for folder in ("in", "out", "state"):
        (tmp_path / folder).mkdir()
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


# --- folders and --online ------------------------------------------------------------------------


def folders_config(tmp_path: Path, base_url: str = "http://127.0.0.1:9", extra: str = "") -> Path:
    return write(tmp_path, f'[api]\nbase_url = "{base_url}"\n[paths]\ninbox = "in"\n'
                 f'outbox = "out"\nstate_dir = "state"\n{extra}')


@pytest.fixture
def token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setenv("X_BEARER_TOKEN", SANDBOX_TOKEN)


def test_a_misspelt_inbox_is_an_error_naming_key_and_path(
    tmp_path: Path, token_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "state").mkdir()
    path = folders_config(tmp_path)
    assert check_config_command(argparse.Namespace(config=path)) == 2
    err = capsys.readouterr().err
    assert f"paths.inbox ({tmp_path / 'in'}) does not exist" in err
    assert not (tmp_path / "in").exists()  # nothing was created


def test_an_outbox_under_a_regular_file_is_an_error(
    tmp_path: Path, token_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "state").mkdir()
    (tmp_path / "file").write_text("not a folder")
    path = write(tmp_path, '[paths]\ninbox = "in"\noutbox = "file/out"\nstate_dir = "state"\n'
                 "create_missing = true\n")
    assert check_config_command(argparse.Namespace(config=path)) == 2
    err = capsys.readouterr().err
    assert f"paths.outbox ({tmp_path / 'file' / 'out'}) cannot be created" in err
    assert "is not a directory" in err
    # Without create_missing too: the file is named, not a "does not exist" to be created.
    path.write_text(path.read_text().replace("create_missing = true\n", ""))
    assert check_config_command(argparse.Namespace(config=path)) == 2
    err = capsys.readouterr().err
    assert f"cannot be created: {tmp_path / 'file'} is not a directory" in err


def test_create_missing_accepts_folders_it_can_make(
    tmp_path: Path, token_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    path = folders_config(tmp_path, extra="create_missing = true\n")
    assert check_config_command(argparse.Namespace(config=path)) == 0
    assert capsys.readouterr().out.startswith("config OK")


def test_an_unwritable_state_dir_is_an_error(
    tmp_path: Path, token_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    for folder in ("in", "out", "state"):
        (tmp_path / folder).mkdir()
    (tmp_path / "state").chmod(0o500)
    try:
        assert check_config_command(argparse.Namespace(config=folders_config(tmp_path))) == 2
    finally:
        (tmp_path / "state").chmod(0o700)
    assert "paths.state_dir" in capsys.readouterr().err


def online(tmp_path: Path, base_url: str) -> argparse.Namespace:
    for folder in ("in", "out", "state"):
        (tmp_path / folder).mkdir(exist_ok=True)
    return argparse.Namespace(config=folders_config(tmp_path, base_url), online=True)


async def test_online_ok_against_the_sandbox(
    tmp_path: Path, token_env: None, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    args = online(tmp_path, sandbox.base_url)
    assert await anyio.to_thread.run_sync(check_config_command, args) == 0
    out = capsys.readouterr().out
    assert "online:      ok: token accepted" in out
    assert "xapi.request" not in out  # the summary alone: the probe's debug log stays out


async def test_online_wrong_token_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setenv("X_BEARER_TOKEN", "wrong-token-0123456789abcdef")
    args = online(tmp_path, sandbox.base_url)
    assert await anyio.to_thread.run_sync(check_config_command, args) == 2
    out, err = capsys.readouterr()
    assert "config OK" not in out
    assert "token refused" in err and "401" in err
    assert "wrong-token-0123456789abcdef" not in err


def test_online_closed_port_exits_1(
    tmp_path: Path, token_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = online(tmp_path, f"http://127.0.0.1:{port}")
    assert check_config_command(args) == 1
    assert "X unreachable" in capsys.readouterr().err
