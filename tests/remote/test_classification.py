"""Issue 10 item 2: every HTTP answer the adapters can get is classified once, as the outage
model needs it: transient (RetryableError: retried in place, forever) or permanent.

A server on 127.0.0.1 answers each status in turn, to the X API client and to the storage
transfers alike; the table is the README's policy table, column "error class".
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestServer

from orchestrator.core.model import JobType
from orchestrator.core.retry import GiveUp, RetryAt, RetryPolicy, is_transient, retry_decision
from orchestrator.errors import (
    AuthError,
    ConflictError,
    DownloadExpired,
    PermanentError,
    RateLimited,
    RetryableError,
    UploadWindowClosed,
)
from orchestrator.remote.download import download
from orchestrator.remote.upload import upload_simple
from orchestrator.remote.xapi import XApi, make_session

TOKEN = "classification-token-0f9e8d"

API: dict[int, type[Exception]] = {
    400: PermanentError, 404: PermanentError, 410: PermanentError, 422: PermanentError,
    401: AuthError, 403: AuthError,
    408: RetryableError, 409: ConflictError, 429: RateLimited,
    500: RetryableError, 502: RetryableError, 503: RetryableError, 504: RetryableError,
}
STORAGE: dict[int, type[Exception]] = {
    400: PermanentError, 403: PermanentError,
    408: RetryableError, 409: RetryableError, 429: RateLimited,
    500: RetryableError, 502: RetryableError, 503: RetryableError,
}


@pytest.fixture
async def server() -> AsyncIterator[BaseTestServer]:
    async def answer(request: web.Request) -> web.Response:
        # /api/<status>/2/compliance/jobs, or /storage/...?status=<status>
        status = int(request.query.get("status") or request.path.split("/")[2])
        code = request.query.get("code", "SomeError")
        if "/storage/" in request.path:
            body = f"<Error><Code>{code}</Code><Message>m</Message></Error>"
            return web.Response(status=status, text=body, content_type="application/xml")
        return web.json_response({"title": "t", "detail": "d", "status": status}, status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    async with TestServer(app, host="127.0.0.1") as test_server:
        yield test_server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with make_session(connect_timeout_s=5, read_timeout_s=10) as client:
        yield client


def transient(error: Exception) -> bool:
    verdict = retry_decision(error, counted_so_far=10**6, waits_so_far=0,
                             policy=RetryPolicy(), rng=random.Random(0))
    return isinstance(verdict, RetryAt) and is_transient(error)


@pytest.mark.parametrize("status", list(API))
async def test_x_api_answers(server: BaseTestServer, session: aiohttp.ClientSession,
                             status: int) -> None:
    api = XApi(session, str(server.make_url(f"/api/{status}")), TOKEN)
    with pytest.raises(Exception) as caught:
        await api.create_job(JobType.TWEETS, name="n")
    assert type(caught.value) is API[status]
    assert caught.value.http_status == status  # type: ignore[attr-defined]
    expected_transient = status in (408, 409, 429) or status >= 500 or status in (401, 403)
    assert transient(caught.value) is expected_transient


@pytest.mark.parametrize("status", list(STORAGE))
async def test_storage_answers(server: BaseTestServer, session: aiohttp.ClientSession,
                               tmp_path: Path, status: int) -> None:
    body = tmp_path / "ids"
    body.write_text("1\n")
    url = str(server.make_url(f"/storage/up?status={status}"))
    with pytest.raises(Exception) as caught:
        await upload_simple(session, url, body)
    assert type(caught.value) is STORAGE[status]
    assert transient(caught.value) is (status in (408, 409, 429) or status >= 500)


async def test_storage_window_closures_and_missing_results(
    server: BaseTestServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    body = tmp_path / "ids"
    body.write_text("1\n")
    expired = str(server.make_url("/storage/x?status=400&code=ExpiredToken"))
    with pytest.raises(UploadWindowClosed):
        await upload_simple(session, expired, body)
    with pytest.raises(DownloadExpired):
        await download(session, expired, tmp_path / "out")
    # Results not there yet (right after `complete`): wait, not a new job.
    missing = str(server.make_url("/storage/x?status=404&code=NoSuchKey"))
    with pytest.raises(RetryableError):
        await download(session, missing, tmp_path / "out")


def test_permanent_answers_are_not_retried_in_place() -> None:
    for error in (PermanentError("400"), UploadWindowClosed("x"), DownloadExpired("x")):
        verdict = retry_decision(error, counted_so_far=0, waits_so_far=0,
                                 policy=RetryPolicy(), rng=random.Random(0))
        assert isinstance(verdict, GiveUp)
