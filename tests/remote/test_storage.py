"""What upload and download share (remote/storage.py): signed URLs get no Authorization
header, and no token, signature or session id reaches an error or a log line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from clocks import SandboxTime
from remote_helpers import TOKEN, assert_no_secret, completed_job

from orchestrator.errors import RemoteError
from orchestrator.remote.download import download
from orchestrator.remote.upload import upload_simple
from orchestrator.remote.xapi import XApi
from orchestrator.sandbox import Sandbox

# -- secrets ---------------------------------------------------------------------------------


async def test_storage_never_sees_the_token_and_nothing_leaks(sb: Sandbox, tmp_path: Path) -> None:
    sent: list[tuple[str, bool]] = []

    async def on_headers(
        _: aiohttp.ClientSession, __: Any, params: aiohttp.TraceRequestHeadersSentParams
    ) -> None:
        sent.append((params.url.path, "Authorization" in params.headers))

    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(on_headers)
    errors: list[RemoteError] = []
    with structlog.testing.capture_logs() as logs:
        async with aiohttp.ClientSession(trace_configs=[trace]) as traced:
            api = XApi(traced, sb.base_url, TOKEN, clock=SandboxTime(sb.clock))
            job, _ = await completed_job(api, traced, tmp_path, count=500)
            sb.faults.add("download", "truncate", after_bytes=100)
            for _ in range(2):
                try:
                    await download(traced, job.download_url, tmp_path / "r.jsonl")
                except RemoteError as exc:
                    errors.append(exc)
            sb.clock.advance(7 * 24 * 3600 + 1)
            for call in (
                lambda: upload_simple(traced, job.upload_url, tmp_path / "ids.txt"),
                lambda: download(traced, job.download_url, tmp_path / "x.jsonl"),
            ):
                with pytest.raises(RemoteError) as caught:
                    await call()
                errors.append(caught.value)

    assert [type(e).__name__ for e in errors] == [
        "RetryableError",
        "UploadWindowClosed",
        "DownloadExpired",
    ]
    api_requests = [auth for path, auth in sent if path.startswith("/2/")]
    storage_requests = [auth for path, auth in sent if not path.startswith("/2/")]
    assert api_requests and all(api_requests)
    assert storage_requests and not any(storage_requests)
    for err in errors:
        assert_no_secret(str(err), job.upload_url, job.download_url)
        assert_no_secret(repr(err.problem), job.upload_url, job.download_url)
    events = {entry["event"] for entry in logs}
    assert {"xapi.request", "storage.request"} <= events
    assert_no_secret(repr(logs), job.upload_url, job.download_url)
