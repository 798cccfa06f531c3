"""Uploads to the signed URL (simple and resumable) against the sandbox's GCS-style storage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl
from remote_helpers import TOKEN, Recorder, assert_no_secret, results_of, wait_status, write_ids

from orchestrator.core.model import JobType, RemoteStatus
from orchestrator.errors import (
    RateLimited,
    RemoteError,
    RetryableError,
    UploadSessionGone,
    UploadWindowClosed,
)
from orchestrator.files.batchfiles import Slice, build_body
from orchestrator.remote.download import download
from orchestrator.remote.storage import signed
from orchestrator.remote.upload import (
    RESUMABLE_QUANTUM,
    _FileSlice,
    body_size,
    start_resumable,
    upload_resumable,
    upload_simple,
)
from orchestrator.remote.xapi import XApi, make_session
from orchestrator.sandbox import Sandbox

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


# -- a body of several files (a pack streamed from its members) ------------------------------


async def _streamed(body: list[Path], start: int, length: int) -> bytes:
    data = _FileSlice(body, start, length, None)
    try:
        return b"".join([block async for block in data])
    finally:
        data.close()


async def test_a_body_of_several_files_streams_as_the_body_a_copy_would_hold(
    tmp_path: Path,
) -> None:
    members = []
    for number, count in enumerate((3, 1, 50_000, 7)):
        member = tmp_path / f"m{number}.ids"
        write_ids(member, count, seed=number)
        members.append(member)
    members.append(members[1])  # the same file twice is just more bytes
    copy = tmp_path / "pack.ids"
    build_body([Slice(m) for m in members], copy)
    expected = copy.read_bytes()
    assert body_size(members) == len(expected)
    sizes = [m.stat().st_size for m in members]
    edges = {0, 1, sizes[0], sizes[0] + sizes[1], sum(sizes[:3]) - 1, len(expected) - 1}
    for start in sorted(edges):
        for length in (1, 17, RESUMABLE_QUANTUM, len(expected) - start):
            length = min(length, len(expected) - start)
            assert await _streamed(members, start, length) == expected[start:start + length]


async def test_a_pack_streamed_from_its_members_resumes_after_a_drop(
    sb: Sandbox, api: XApi, tmp_path: Path
) -> None:
    """Offsets of a resumable session mean the same in a streamed pack as in its copy:
    chunk boundaries fall inside members and the upload resumes mid-member."""
    members, ids = [], []
    for number, count in enumerate((20_000, 15_000, 25_000)):
        member = tmp_path / f"m{number}.ids"
        ids += write_ids(member, count, seed=number + 10)
        members.append(member)
    total = body_size(members)
    job = await api.create_job(JobType.TWEETS, name="pack", resumable=True)

    async def drop_second_chunk(
        _: aiohttp.ClientSession, __: Any, params: aiohttp.TraceRequestEndParams
    ) -> None:
        if params.response.status == 308 and params.headers.get("Content-Range", "").startswith(
            "bytes 0-"
        ):
            sb.faults.add("upload", "reset", after_bytes=100_000)

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(drop_second_chunk)
    async with aiohttp.ClientSession(trace_configs=[trace]) as first:
        session_url = await start_resumable(first, job.upload_url)
        with pytest.raises(RetryableError):
            await upload_resumable(first, session_url, members, chunk_bytes=RESUMABLE_QUANTUM)
    async with make_session(5, 10) as second:
        progress = Recorder()
        await upload_resumable(second, session_url, members,
                               chunk_bytes=3 * RESUMABLE_QUANTUM, progress=progress)
        assert RESUMABLE_QUANTUM <= progress.calls[0][0] < total
        assert progress.calls[-1] == (total, total)
        done = await wait_status(XApi(second, sb.base_url, TOKEN), job.id, RemoteStatus.COMPLETE)
        record = sb.job(job.id)
        assert record is not None and record["uploaded_ids"] == len(ids)
        dest = tmp_path / "results.jsonl"
        await download(second, done.download_url, dest)
    assert results_of(dest) == sb.expected_results("tweets", ids)
