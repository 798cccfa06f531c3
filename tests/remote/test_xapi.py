"""The X API adapter against the sandbox on 127.0.0.1: shapes, errors, rate limits, secrets."""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import timedelta

import aiohttp
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer
from clocks import SandboxTime
from remote_helpers import TOKEN

from orchestrator.core.model import JobType, RemoteStatus
from orchestrator.errors import (
    AuthError,
    ConflictError,
    PermanentError,
    RateLimited,
    RemoteError,
    RetryableError,
)
from orchestrator.remote.xapi import XApi, make_session
from orchestrator.sandbox import Sandbox

WRONG_TOKEN = "wrong-token-b81f33c0aa"


def assert_no_secret(text: str) -> None:
    assert TOKEN not in text
    assert WRONG_TOKEN not in text
    assert "X-Goog-Signature" not in text


# -- shapes ----------------------------------------------------------------------------------


async def test_create_get_and_list_parse_into_remote_jobs(api: XApi) -> None:
    job = await api.create_job(JobType.TWEETS, name="batch-0001")
    assert job.id.isdigit() and len(job.id) == 19
    assert job.type is JobType.TWEETS
    assert job.status is RemoteStatus.CREATED
    assert job.name == "batch-0001"
    assert job.resumable is False
    assert job.upload_expires_at - job.created_at == timedelta(seconds=900)
    assert job.download_expires_at - job.created_at == timedelta(days=7)
    assert "X-Goog-Signature=" in job.upload_url and "/submission/" in job.upload_url
    assert "/delivery/" in job.download_url

    assert await api.get_job(job.id) == job  # same URLs and signatures as at creation
    assert await api.list_jobs(JobType.TWEETS) == [job]
    assert await api.list_jobs(JobType.TWEETS, status="created") == [job]
    assert await api.list_jobs(JobType.TWEETS, status="complete") == []  # no `data` key
    assert await api.list_jobs(JobType.USERS) == []


async def test_resumable_flag_is_echoed(api: XApi) -> None:
    job = await api.create_job(JobType.USERS, name="big", resumable=True)
    assert job.resumable is True and job.type is JobType.USERS
    assert "x-goog-resumable" in job.upload_url


async def test_list_without_meta_is_tolerated(sb: Sandbox, api: XApi) -> None:
    sb.configure(include_result_count=False)
    assert await api.list_jobs(JobType.USERS) == []
    job = await api.create_job(JobType.USERS, name="n")
    assert await api.list_jobs(JobType.USERS) == [job]


async def test_find_job_by_name_returns_the_newest(sb: Sandbox, api: XApi) -> None:
    first = await api.create_job(JobType.TWEETS, name="batch-7")
    sb.clock.advance(901)  # never uploaded: expires, which frees the one-job rule
    await api.create_job(JobType.TWEETS, name="other")
    sb.clock.advance(901)
    second = await api.create_job(JobType.TWEETS, name="batch-7")

    found = await api.find_job_by_name(JobType.TWEETS, "batch-7")
    assert found is not None and found.id == second.id != first.id
    assert found.status is RemoteStatus.CREATED
    assert await api.find_job_by_name(JobType.TWEETS, "batch-8") is None
    assert await api.find_job_by_name(JobType.USERS, "batch-7") is None


# -- rate limits -----------------------------------------------------------------------------


async def test_every_response_updates_the_budget(sb: Sandbox, api: XApi) -> None:
    job = await api.create_job(JobType.TWEETS, name="b")
    await api.get_job(job.id)
    await api.get_job(job.id)
    snap = api.budget.snapshot()
    assert snap["create"].limit == 150 and snap["create"].remaining == 149
    assert snap["get"].remaining == 148
    assert "list" not in snap
    assert snap["get"].reset_at == pytest.approx(sb.clock.timestamp() + 900, abs=2)


async def test_scripted_429_waits_until_the_reset_header(sb: Sandbox, api: XApi) -> None:
    job = await api.create_job(JobType.TWEETS, name="b")
    sb.faults.add("get", "429", retry_after=30)
    with pytest.raises(RateLimited) as caught:
        await api.get_job(job.id)
    err = caught.value
    assert err.http_status == 429 and err.endpoint == "get"
    assert err.retry_after == pytest.approx(30, abs=1.5)
    assert err.problem is not None and err.problem["title"] == "Too Many Requests"
    assert isinstance(err, RetryableError)
    # The next call goes through once the fault is used up.
    assert (await api.get_job(job.id)).id == job.id


async def test_exhausted_window_is_known_before_the_next_call(
    session: aiohttp.ClientSession, make_sandbox: Callable[..., Sandbox]
) -> None:
    async with make_sandbox(token=TOKEN, processing_time_s=0, seed=3, rate_limit=3) as sb:
        api = XApi(session, sb.base_url, TOKEN, clock=SandboxTime(sb.clock))
        for _ in range(3):
            await api.list_jobs(JobType.TWEETS)
        now = sb.clock.timestamp()
        assert api.budget.wait_before("list", now) == pytest.approx(900, abs=2)
        assert api.budget.wait_before("get", now) == 0
        with pytest.raises(RateLimited) as caught:
            await api.list_jobs(JobType.TWEETS)
        assert caught.value.retry_after == pytest.approx(900, abs=2)
        sb.clock.advance(900)
        assert api.budget.wait_before("list", sb.clock.timestamp()) == 0
        assert await api.list_jobs(JobType.TWEETS) == []


# -- error classification --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["500", "503"])
async def test_server_errors_are_retryable(sb: Sandbox, api: XApi, kind: str) -> None:
    sb.faults.add("create", kind)
    with pytest.raises(RetryableError) as caught:
        await api.create_job(JobType.TWEETS, name="b")
    assert type(caught.value) is RetryableError
    assert caught.value.http_status == int(kind) and caught.value.endpoint == "create"
    assert caught.value.problem is not None
    # Nothing was created: the retry succeeds without a conflict.
    assert (await api.create_job(JobType.TWEETS, name="b")).name == "b"


@pytest.mark.parametrize("endpoint", ["create", "get", "list"])
async def test_dropped_connection_is_retryable(sb: Sandbox, api: XApi, endpoint: str) -> None:
    job = await api.create_job(JobType.TWEETS, name="b")
    # aiohttp itself retries an idempotent request once when a pooled keep-alive connection
    # turns out dead, so GETs need two drops in a row to fail.
    sb.faults.add(endpoint, "reset", count=1 if endpoint == "create" else 2)
    with pytest.raises(RetryableError) as caught:
        if endpoint == "create":
            await api.create_job(JobType.USERS, name="c")
        elif endpoint == "get":
            await api.get_job(job.id)
        else:
            await api.list_jobs(JobType.TWEETS)
    assert type(caught.value) is RetryableError
    assert caught.value.http_status is None and caught.value.endpoint == endpoint
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


async def test_slow_answer_hits_the_read_timeout(sb: Sandbox) -> None:
    async with make_session(connect_timeout_s=5, read_timeout_s=0.2) as quick:
        api = XApi(quick, sb.base_url, TOKEN)
        sb.faults.add("list", "slow", delay=0.5)
        with pytest.raises(RetryableError) as caught:
            await api.list_jobs(JobType.TWEETS)
        assert "Timeout" in str(caught.value)


async def test_connection_refused_is_retryable(session: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api = XApi(session, f"http://127.0.0.1:{port}", TOKEN)
    with pytest.raises(RetryableError) as caught:
        await api.list_jobs(JobType.TWEETS)
    assert caught.value.http_status is None
    assert_no_secret(str(caught.value))


async def test_wrong_token_is_an_auth_error(sb: Sandbox, session: aiohttp.ClientSession) -> None:
    api = XApi(session, sb.base_url, WRONG_TOKEN)
    with pytest.raises(AuthError) as caught:
        await api.create_job(JobType.TWEETS, name="b")
    err = caught.value
    assert err.http_status == 401 and err.endpoint == "create"
    assert err.problem == {
        "title": "Unauthorized",
        "type": "about:blank",
        "status": 401,
        "detail": "Unauthorized",
    }
    assert not isinstance(err, RetryableError)
    assert_no_secret(str(err))
    assert sb.jobs() == []


async def test_second_job_is_a_conflict(api: XApi) -> None:
    await api.create_job(JobType.TWEETS, name="first")
    with pytest.raises(ConflictError) as caught:
        await api.create_job(JobType.USERS, name="second")  # global one-job rule
    err = caught.value
    assert err.http_status == 409
    assert err.problem is not None and err.problem["type"].endswith("/conflict")
    assert "already in progress" in str(err)
    assert isinstance(err, RetryableError)


async def test_bad_parameter_is_permanent(api: XApi) -> None:
    # `expired` exists as a status but is not accepted as a list filter.
    with pytest.raises(PermanentError) as caught:
        await api.list_jobs(JobType.TWEETS, status="expired")
    err = caught.value
    assert type(err) is PermanentError and err.http_status == 400
    assert err.problem is not None and err.problem["type"].endswith("/invalid-request")
    assert "status" in str(err)


async def test_unknown_job_id_is_permanent(api: XApi) -> None:
    with pytest.raises(PermanentError) as caught:
        await api.get_job("1234567890123456789")
    assert caught.value.endpoint == "get"
    assert "Could not find compliance job" in str(caught.value)


async def test_malformed_job_id_is_refused_locally(sb: Sandbox, api: XApi) -> None:
    with pytest.raises(PermanentError):
        await api.get_job("../jobs?type=tweets")
    assert api.budget.snapshot() == {}  # no request went out


async def test_malformed_200_is_retryable(session: aiohttp.ClientSession) -> None:
    # The one answer the sandbox never gives: a broken body from a healthy-looking 200.
    async def broken(request: web.Request) -> web.Response:
        if request.path.endswith("/jobs"):  # a list that is not a list (one bad job: below)
            return web.Response(text='{"data": {"id": "1"}}', content_type="application/json")
        return web.Response(text="<html>maintenance</html>", content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", broken)
    async with TestServer(app, host="127.0.0.1") as server:
        api = XApi(session, str(server.make_url("")), TOKEN)
        with pytest.raises(RetryableError) as caught:
            await api.get_job("1446017776678801409")
        assert caught.value.http_status == 200
        with pytest.raises(RetryableError):
            await api.list_jobs(JobType.TWEETS)


async def test_one_malformed_job_in_a_list_is_skipped_not_fatal(
    sb: Sandbox, session: aiohttp.ClientSession
) -> None:
    """One unreadable entry anywhere in the list made every listing fail (retryable), so a
    batch in CREATING, which finds its job by name in that list, was stuck for good. Now the
    entry is skipped, said once (without its values), and the rest is used."""
    api = XApi(session, sb.base_url, TOKEN, clock=SandboxTime(sb.clock))
    job = await api.create_job(JobType.TWEETS, name="co-batch-1")
    good = await sb_listing(session, sb)
    bad = {"id": "99", "type": "tweets", "status": "complete",
           "upload_url": f"https://storage.example/u?X-Goog-Signature=s3cr3t&t={TOKEN}"}

    async def listing(request: web.Request) -> web.Response:
        return web.json_response({"data": [bad, "not an object", *good]})

    app = web.Application()
    app.router.add_get("/2/compliance/jobs", listing)
    async with TestServer(app, host="127.0.0.1") as server:
        api = XApi(session, str(server.make_url("")), TOKEN)
        with structlog.testing.capture_logs() as logs:
            listed = await api.list_jobs(JobType.TWEETS)
            found = await api.find_job_by_name(JobType.TWEETS, "co-batch-1")
    assert [j.id for j in listed] == [job.id]
    assert found is not None and (found.id, found.name) == (job.id, "co-batch-1")
    skipped = [e for e in logs if e["event"] == "xapi.list_item_skipped"]
    assert [(e["log_level"], e["job_id"]) for e in skipped] == [("warning", "99"),
                                                                 ("warning", None)]
    assert_no_secret(repr(logs))
    assert "s3cr3t" not in repr(logs)


async def sb_listing(session: aiohttp.ClientSession, sb: Sandbox) -> list[object]:
    """The sandbox's own list answer (its job objects, as X writes them)."""
    async with session.get(f"{sb.base_url}/2/compliance/jobs", params={"type": "tweets"},
                           headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
        data = (await resp.json())["data"]
    assert isinstance(data, list) and data
    return data


# -- secrets and logs ------------------------------------------------------------------------


async def test_no_secret_in_errors_or_logs(
    sb: Sandbox, api: XApi, session: aiohttp.ClientSession
) -> None:
    errors: list[RemoteError] = []
    with structlog.testing.capture_logs() as logs:
        job = await api.create_job(JobType.TWEETS, name="b")
        for endpoint, kind, count in (
            ("get", "500", 1),
            ("get", "reset", 2),
            ("get", "429", 1),
            ("create", "503", 1),
        ):
            sb.faults.add(endpoint, kind, count)
        for call in (
            lambda: api.get_job(job.id),
            lambda: api.get_job(job.id),
            lambda: api.get_job(job.id),
            lambda: api.create_job(JobType.USERS, name="x"),
            lambda: api.create_job(JobType.USERS, name="x"),
            lambda: XApi(session, sb.base_url, WRONG_TOKEN).get_job(job.id),
        ):
            with pytest.raises(RemoteError) as caught:
                await call()
            errors.append(caught.value)
    assert [type(e).__name__ for e in errors] == [
        "RetryableError",
        "RetryableError",
        "RateLimited",
        "RetryableError",
        "ConflictError",
        "AuthError",
    ]
    for err in errors:
        assert_no_secret(str(err))
        assert_no_secret(repr(err.problem))
    requests = [entry for entry in logs if entry["event"] == "xapi.request"]
    assert len(requests) == 7
    assert {entry["endpoint"] for entry in requests} == {"create", "get"}
    assert [entry["http_status"] for entry in requests] == [200, 500, None, 429, 503, 409, 401]
    assert all(entry["log_level"] == "debug" and entry["duration_ms"] >= 0 for entry in requests)
    assert_no_secret(repr(logs))
