"""Plain http is refused for the real API and for signed storage URLs (issue 10, item 7):
the bearer token and the URL signatures would cross the network in clear. Loopback stays
allowed (tests, a local emulator)."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from orchestrator.cli.check_config import check_config_command
from orchestrator.config import ConfigError, is_secure_url, load_config
from orchestrator.errors import PermanentError
from orchestrator.remote.download import download
from orchestrator.remote.upload import start_resumable, upload_resumable, upload_simple

SIGNED = "X-Goog-Signature=deadbeefcafe"


@pytest.mark.parametrize(
    "url",
    ["http://api.x.com", "http://10.0.0.7:8080", "http://[2001:db8::1]", "HTTP://api.x.com"],
)
def test_plain_http_base_url_is_refused_naming_the_key(tmp_path: Path, url: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[api]\nbase_url = "{url}"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "api.base_url" in message and url in message
    assert "https" in message and "clear" in message


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9999", "http://127.8.0.1", "http://[::1]:80", "http://localhost:1",
            "https://api.x.com", "https://api.x.com:8443/base"],
)
def test_https_and_loopback_http_are_accepted(tmp_path: Path, url: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[api]\nbase_url = "{url}"\n', encoding="utf-8")
    assert load_config(path).api.base_url == url


def test_check_config_refuses_plain_http(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setenv("X_BEARER_TOKEN", "token-abc")
    path = tmp_path / "config.toml"
    path.write_text('[api]\nbase_url = "http://api.x.com"\n', encoding="utf-8")
    assert check_config_command(argparse.Namespace(config=path)) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "api.base_url" in err and "http://api.x.com" in err


def test_secure_url_predicate() -> None:
    assert is_secure_url(f"https://storage.googleapis.com/b/o?{SIGNED}")
    assert is_secure_url(f"http://127.0.0.1:4000/b/o?{SIGNED}")
    assert not is_secure_url(f"http://storage.googleapis.com/b/o?{SIGNED}")
    assert not is_secure_url("ftp://127.0.0.1/x")
    assert not is_secure_url("http://localhost.evil.example/x")
    assert not is_secure_url("https://")


@pytest.fixture
async def recording_session() -> AsyncIterator[tuple[aiohttp.ClientSession, list[str]]]:
    """A session that records every request it starts and never lets one reach the network."""
    started: list[str] = []

    async def on_start(_session: Any, _ctx: SimpleNamespace, params: Any) -> None:
        started.append(str(params.url))
        raise aiohttp.ClientConnectionError("test: no network")

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        yield session, started


INSECURE = f"http://storage.googleapis.com/bucket/object?{SIGNED}"


async def test_insecure_signed_urls_are_permanent_errors_without_a_request(
    recording_session: tuple[aiohttp.ClientSession, list[str]], tmp_path: Path
) -> None:
    session, started = recording_session
    body = tmp_path / "body.txt"
    body.write_text("1\n2\n")
    attempts = [
        upload_simple(session, INSECURE, body),
        start_resumable(session, INSECURE),
        upload_resumable(session, INSECURE, body, chunk_bytes=256 * 1024),
        download(session, INSECURE, tmp_path / "raw"),
    ]
    for attempt in attempts:
        with pytest.raises(PermanentError) as info:
            await attempt
        message = str(info.value)
        assert "non-https" in message
        assert "deadbeefcafe" not in message  # the signature stays out of the error
    assert started == []
    assert not (tmp_path / "raw").exists()
