"""Outbound proxies: HTTP_PROXY / HTTPS_PROXY / NO_PROXY are honoured by the app's session
(make_session: trust_env), for the API and the storage transfers alike. The proxy is a small
forward proxy on 127.0.0.1, written here, that records what went through it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from daemon_helpers import drained, drop, load, make_ids, outcome, running_service, write_config
from remote_helpers import TOKEN

from orchestrator.core.model import JobType
from orchestrator.remote.xapi import XApi, make_session
from orchestrator.sandbox import Sandbox


@dataclass
class ForwardProxy:
    """Plain-HTTP forward proxy: one request per client connection (answers Connection:
    close), forwarded in origin form on a fresh upstream connection."""

    seen: list[tuple[str, str]] = field(default_factory=list)  # (method, absolute URL)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ")
            self.seen.append((method, target))
            url = urlsplit(target)
            headers = [h for h in lines[1:] if h and not h.lower().startswith(
                ("proxy-", "connection:", "keep-alive:"))]
            length = next((int(h.split(":", 1)[1]) for h in headers
                           if h.lower().startswith("content-length:")), 0)
            body = await reader.readexactly(length)
            path = url.path + (f"?{url.query}" if url.query else "")
            up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port)
            request = "\r\n".join([f"{method} {path} {version}", *headers, "Connection: close"])
            up_writer.write(request.encode("latin-1") + b"\r\n\r\n" + body)
            await up_writer.drain()
            response = await up_reader.read()
            up_writer.close()
            status_head, _, rest = response.partition(b"\r\n\r\n")
            kept = [h for h in status_head.split(b"\r\n")
                    if not h.lower().startswith((b"connection:", b"keep-alive:"))]
            writer.write(b"\r\n".join([*kept, b"Connection: close"]) + b"\r\n\r\n" + rest)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def proxy(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ForwardProxy]:
    recorder = ForwardProxy()
    server = await asyncio.start_server(recorder.handle, "127.0.0.1", 0)
    recorder.port = server.sockets[0].getsockname()[1]
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY",
                 "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{recorder.port}")
    async with server:
        yield recorder


async def test_api_calls_go_through_the_configured_proxy(
    sb: Sandbox, proxy: ForwardProxy
) -> None:
    async with make_session(5, 10) as http:
        api = XApi(http, sb.base_url, TOKEN)
        job = await api.create_job(JobType.TWEETS, name="via-proxy")
        assert (await api.get_job(job.id)).name == "via-proxy"
    assert proxy.seen == [
        ("POST", f"{sb.base_url}/2/compliance/jobs"),
        ("GET", f"{sb.base_url}/2/compliance/jobs/{job.id}"),
    ]


async def test_no_proxy_is_honoured(
    sb: Sandbox, proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    async with make_session(5, 10) as http:
        assert await XApi(http, sb.base_url, TOKEN).list_jobs(JobType.TWEETS) == []
    assert proxy.seen == []


async def test_the_daemon_delivers_through_the_proxy(
    tmp_path: Path, sandbox: Sandbox, proxy: ForwardProxy
) -> None:
    async with running_service(load(write_config(tmp_path, sandbox.base_url))) as service:
        drop(tmp_path, "tweets", "a.txt", make_ids(5, 20))
        await drained(service)
    assert outcome(tmp_path, "tweets", "a.txt") == "delivered"
    methods = {(method, urlsplit(url).path.startswith("/2/")) for method, url in proxy.seen}
    assert ("POST", True) in methods  # the job was created through the proxy
    assert ("PUT", False) in methods  # and the IDs uploaded to storage through it
    assert len(proxy.seen) == len(sandbox.request_log)
