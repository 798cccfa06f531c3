"""Signed-URL transfers against the sandbox's GCS-style storage on 127.0.0.1."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
import yarl
from clocks import SandboxTime

from orchestrator.core.model import JobType, RemoteJob, RemoteStatus
from orchestrator.errors import (
    DownloadExpired,
    IntegrityError,
    PermanentError,
    RateLimited,
    RemoteError,
    RetryableError,
    UploadSessionGone,
    UploadWindowClosed,
)
from orchestrator.remote.download import download
from orchestrator.remote.storage import signed
from orchestrator.remote.upload import (
    RESUMABLE_QUANTUM,
    start_resumable,
    upload_resumable,
    upload_simple,
)
from orchestrator.remote.xapi import XApi, make_session
from orchestrator.sandbox import Sandbox, SandboxConfig

TOKEN = "transfer-test-token-93ad0c"


@pytest.fixture
async def sb() -> AsyncIterator[Sandbox]:
    async with Sandbox(SandboxConfig(token=TOKEN, processing_time_s=0, seed=3)) as sandbox:
        yield sandbox


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with make_session(connect_timeout_s=5, read_timeout_s=10) as client:
        yield client


@pytest.fixture
def api(sb: Sandbox, session: aiohttp.ClientSession) -> XApi:
    return XApi(session, sb.base_url, TOKEN, clock=SandboxTime(sb.clock))


def write_ids(path: Path, count: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    ids = [str(rng.randrange(10**17, 2 * 10**18)) for _ in range(count)]
    path.write_text("".join(f"{i}\n" for i in ids))
    return ids


def results_of(path: Path) -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {row["id"]: row for row in rows}


def assert_no_secret(text: str, *urls: str) -> None:
    assert TOKEN not in text
    assert "X-Goog-Signature" not in text and "X-Goog-Credential" not in text
    for url in urls:
        assert yarl.URL(url, encoded=True).raw_query_string not in text
    assert "upload_id" not in text


async def wait_status(api: XApi, job_id: str, wanted: RemoteStatus) -> RemoteJob:
    for _ in range(200):
        job = await api.get_job(job_id)
        if job.status == wanted:
            return job
    raise AssertionError(f"job {job_id} never became {wanted}")


async def completed_job(
    api: XApi, session: aiohttp.ClientSession, tmp_path: Path, count: int = 3000
) -> tuple[RemoteJob, list[str]]:
    body = tmp_path / "ids.txt"
    ids = write_ids(body, count)
    job = await api.create_job(JobType.TWEETS, name="done")
    await upload_simple(session, job.upload_url, body)
    return await wait_status(api, job.id, RemoteStatus.COMPLETE), ids


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))


# -- simple upload ---------------------------------------------------------------------------


async def test_simple_upload_sends_the_signed_url_byte_for_byte(
    sb: Sandbox, api: XApi, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    body = tmp_path / "ids.txt"
    ids = write_ids(body, 5000)
    job = await api.create_job(JobType.TWEETS, name="plain")

    assert str(signed(job.upload_url)) == job.upload_url
    reencoded = yarl.URL(job.upload_url)  # what aiohttp does with a plain string
    assert str(reencoded) != job.upload_url  # %40 / %2F in X-Goog-Credential get decoded
    async with session.put(
        reencoded, data=body.read_bytes(), headers={"Content-Type": "text/plain"}
    ) as resp:
        assert resp.status == 403
        assert b"<Code>SignatureDoesNotMatch</Code>" in await resp.read()

    progress = Recorder()
    await upload_simple(session, job.upload_url, body, progress=progress)
    size = body.stat().st_size
    assert progress.calls[-1] == (size, size)
    assert [done for done, _ in progress.calls] == sorted(done for done, _ in progress.calls)
    record = sb.job(job.id)
    assert record is not None and record["uploaded_ids"] == len(ids)
    assert (await wait_status(api, job.id, RemoteStatus.COMPLETE)).id == job.id


async def test_upload_after_the_window_is_closed(
    sb: Sandbox, api: XApi, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    body = tmp_path / "ids.txt"
    write_ids(body, 10)
    job = await api.create_job(JobType.USERS, name="late")
    sb.clock.advance(901)
    with pytest.raises(UploadWindowClosed) as caught:
        await upload_simple(session, job.upload_url, body)
    err = caught.value
    assert err.http_status == 400 and err.endpoint == "upload"
    assert err.problem is not None and err.problem["code"] == "ExpiredToken"
    assert "/submission/" in str(err)
    assert_no_secret(str(err), job.upload_url)


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("500", RetryableError),
        ("503", RetryableError),
        ("reset", RetryableError),
        ("429", RateLimited),
    ],
)
async def test_upload_faults_are_retryable_and_a_retry_succeeds(
    sb: Sandbox,
    api: XApi,
    session: aiohttp.ClientSession,
    tmp_path: Path,
    kind: str,
    error: type[RemoteError],
) -> None:
    body = tmp_path / "ids.txt"
    ids = write_ids(body, 20000)  # 400 KB: the reset comes mid-body
    job = await api.create_job(JobType.TWEETS, name="flaky")
    sb.faults.add(
        "upload",
        kind,
        after_bytes=50_000 if kind == "reset" else None,
        retry_after=7 if kind == "429" else None,
    )
    with pytest.raises(error) as caught:
        await upload_simple(session, job.upload_url, body)
    assert type(caught.value) is error and caught.value.endpoint == "upload"
    if kind == "429":
        assert caught.value.retry_after == 7
    assert_no_secret(str(caught.value), job.upload_url)
    record = sb.job(job.id)
    assert record is not None and record["status"] == "created"  # nothing half-processed

    await upload_simple(session, job.upload_url, body)
    done = await wait_status(api, job.id, RemoteStatus.COMPLETE)
    dest = tmp_path / "results.jsonl"
    await download(session, done.download_url, dest)
    assert results_of(dest) == sb.expected_results("tweets", ids)


# -- resumable upload ------------------------------------------------------------------------


async def test_resumable_upload_survives_a_drop_and_a_restart(
    sb: Sandbox, api: XApi, tmp_path: Path
) -> None:
    body = tmp_path / "ids.txt"
    ids = write_ids(body, 60000)  # ~1.2 MB: five 256 KiB chunks
    total = body.stat().st_size
    job = await api.create_job(JobType.TWEETS, name="big", resumable=True)

    async def drop_second_chunk(
        _: aiohttp.ClientSession, __: Any, params: aiohttp.TraceRequestEndParams
    ) -> None:
        # The first chunk's 308 has arrived: cut the next request (chunk 2) off after
        # 100 kB of its body have reached the storage.
        if params.response.status == 308 and params.headers.get("Content-Range", "").startswith(
            "bytes 0-"
        ):
            sb.faults.add("upload", "reset", after_bytes=100_000)

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(drop_second_chunk)
    async with aiohttp.ClientSession(trace_configs=[trace]) as first:
        session_url = await start_resumable(first, job.upload_url)
        assert "upload_id=" in session_url and session_url.startswith(job.upload_url)
        with pytest.raises(RetryableError) as caught:
            await upload_resumable(first, session_url, body, chunk_bytes=RESUMABLE_QUANTUM)
        assert caught.value.endpoint == "upload"
        assert_no_secret(str(caught.value), job.upload_url)

    # A new process: a new client session and only the stored session URL.
    async with make_session(5, 10) as second:
        progress = Recorder()
        await upload_resumable(
            second, session_url, body, chunk_bytes=2 * RESUMABLE_QUANTUM, progress=progress
        )
    resumed_at = progress.calls[0][0]
    assert RESUMABLE_QUANTUM <= resumed_at < total  # continued, did not start over
    assert progress.calls[-1] == (total, total)

    async with make_session(5, 10) as third:
        # Asking again after completion is harmless.
        await upload_resumable(third, session_url, body, chunk_bytes=RESUMABLE_QUANTUM)
        api3 = XApi(third, sb.base_url, TOKEN)
        done = await wait_status(api3, job.id, RemoteStatus.COMPLETE)
        record = sb.job(job.id)
        assert record is not None and record["uploaded_ids"] == len(ids)
        dest = tmp_path / "results.jsonl"
        await download(third, done.download_url, dest)
    assert results_of(dest) == sb.expected_results("tweets", ids)


async def test_resumable_start_after_window_and_unknown_session(
    sb: Sandbox, api: XApi, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    body = tmp_path / "ids.txt"
    write_ids(body, 100)
    job = await api.create_job(JobType.USERS, name="r", resumable=True)
    with pytest.raises(ValueError, match="multiple"):
        await upload_resumable(session, job.upload_url, body, chunk_bytes=1000)

    bogus = f"{job.upload_url}&upload_id=ADPycdNoSuchSession"
    with pytest.raises(UploadSessionGone) as gone:
        await upload_resumable(session, bogus, body, chunk_bytes=RESUMABLE_QUANTUM)
    assert gone.value.http_status == 404
    assert_no_secret(str(gone.value), job.upload_url)

    sb.clock.advance(901)
    with pytest.raises(UploadWindowClosed):
        await start_resumable(session, job.upload_url)


# -- download --------------------------------------------------------------------------------


async def test_download_is_verified(
    sb: Sandbox, api: XApi, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    job, ids = await completed_job(api, session, tmp_path)
    dest = tmp_path / "results.jsonl"
    progress = Recorder()
    report = await download(session, job.download_url, dest, progress=progress)
    assert report.bytes == dest.stat().st_size > 0
    assert report.crc32c_checked and report.resumed_from == 0
    assert progress.calls[-1] == (report.bytes, report.bytes)
    assert "\n\n" in dest.read_text()  # blank lines kept: parsing is the caller's job
    assert results_of(dest) == sb.expected_results("tweets", ids)

    # Downloading onto a complete file asks for a range past the end (416): start over.
    again = await download(session, job.download_url, dest)
    assert again.bytes == report.bytes and again.resumed_from == 0


async def test_truncated_download_keeps_what_arrived_and_resumes(
    sb: Sandbox, api: XApi, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    job, ids = await completed_job(api, session, tmp_path, count=20000)
    dest = tmp_path / "results.jsonl"
    sb.faults.add("download", "truncate", after_bytes=150_000)
    with pytest.raises(RetryableError) as caught:
        await download(session, job.download_url, dest)
    assert type(caught.value) is RetryableError and caught.value.endpoint == "download"
    assert_no_secret(str(caught.value), job.download_url)
    # What reached the disk stays (aiohttp drops bytes still buffered when the connection
    # breaks, so it can be less than what the server sent).
    partial = dest.stat().st_size
    assert partial <= 150_000

    report = await download(session, job.download_url, dest)
    assert report.resumed_from == partial and report.crc32c_checked
    assert report.bytes == dest.stat().st_size > 150_000
    assert results_of(dest) == sb.expected_results("tweets", ids)


async def test_partial_file_resumes_with_a_range_request(
    sb: Sandbox, api: XApi, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    job, _ = await completed_job(api, session, tmp_path)
    whole = tmp_path / "whole.jsonl"
    await download(session, job.download_url, whole)
    dest = tmp_path / "results.jsonl"
    dest.write_bytes(whole.read_bytes()[:3000])  # an earlier attempt stopped here

    progress = Recorder()
    report = await download(session, job.download_url, dest, progress=progress)
    assert report.resumed_from == 3000 and report.crc32c_checked
    assert sb.request_log[-1][0] == "GET" and sb.request_log[-1][2] == 206
    assert progress.calls[0][0] > 3000 and progress.calls[-1] == (report.bytes, report.bytes)
    assert dest.read_bytes() == whole.read_bytes()


async def test_corrupted_partial_file_is_caught_by_crc32c(
    sb: Sandbox, api: XApi, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    job, ids = await completed_job(api, session, tmp_path)
    whole = tmp_path / "whole.jsonl"
    await download(session, job.download_url, whole)
    prefix = bytearray(whole.read_bytes()[:2000])
    prefix[500] ^= 0x01  # one flipped bit on disk from an earlier attempt
    dest = tmp_path / "results.jsonl"
    dest.write_bytes(bytes(prefix))

    with pytest.raises(IntegrityError) as caught:
        await download(session, job.download_url, dest)
    assert "crc32c" in str(caught.value) and isinstance(caught.value, RetryableError)
    assert_no_secret(str(caught.value), job.download_url)
    assert not dest.exists()  # never delivered

    report = await download(session, job.download_url, dest)
    assert report.resumed_from == 0 and report.crc32c_checked
    assert results_of(dest) == sb.expected_results("tweets", ids)


async def test_expired_download_url(
    sb: Sandbox, api: XApi, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    job, _ = await completed_job(api, session, tmp_path)
    sb.clock.advance(7 * 24 * 3600 + 1)
    dest = tmp_path / "results.jsonl"
    with pytest.raises(DownloadExpired) as caught:
        await download(session, job.download_url, dest)
    assert caught.value.http_status == 400 and isinstance(caught.value, PermanentError)
    assert_no_secret(str(caught.value), job.download_url)
    assert not dest.exists()


async def test_download_before_results_exist_is_retryable(
    api: XApi, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    job = await api.create_job(JobType.TWEETS, name="early")
    dest = tmp_path / "results.jsonl"
    with pytest.raises(RetryableError) as caught:
        await download(session, job.download_url, dest)
    assert caught.value.http_status == 404
    assert caught.value.problem is not None and caught.value.problem["code"] == "NoSuchKey"
    assert not dest.exists()


@pytest.mark.parametrize("kind", ["500", "503", "reset"])
async def test_download_faults_are_retryable(
    sb: Sandbox, api: XApi, session: aiohttp.ClientSession, tmp_path: Path, kind: str
) -> None:
    job, ids = await completed_job(api, session, tmp_path)
    dest = tmp_path / "results.jsonl"
    # A dropped GET needs two in a row: aiohttp retries it once on its own.
    sb.faults.add("download", kind, count=2 if kind == "reset" else 1)
    with pytest.raises(RetryableError) as caught:
        await download(session, job.download_url, dest)
    assert type(caught.value) is RetryableError
    assert_no_secret(str(caught.value), job.download_url)
    await download(session, job.download_url, dest)
    assert results_of(dest) == sb.expected_results("tweets", ids)


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
