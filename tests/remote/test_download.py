"""Downloads from the signed URL: crc32c checks, resuming with a range request, expiry."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from remote_helpers import Recorder, assert_no_secret, completed_job, results_of

from orchestrator.core.model import JobType
from orchestrator.errors import DownloadExpired, IntegrityError, PermanentError, RetryableError
from orchestrator.files.results import ResultStream, normalise_results
from orchestrator.remote.download import download
from orchestrator.remote.xapi import XApi
from orchestrator.sandbox import Sandbox

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


# -- one pass: the body normalised as it arrives ---------------------------------------------


async def test_results_normalised_in_the_same_pass_survive_a_truncated_transfer(
    sb: Sandbox, api: XApi, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    job, ids = await completed_job(api, session, tmp_path, count=20000)
    dest, results = tmp_path / "download", tmp_path / "results.jsonl"
    sb.faults.add("download", "truncate", after_bytes=150_000)
    stream = ResultStream(results)
    with pytest.raises(RetryableError):
        await download(session, job.download_url, dest, sink=stream)
    stream.abort()
    assert not results.exists() and list(tmp_path.glob(".tmp-*")) == []  # nothing placed
    partial = dest.stat().st_size
    assert partial <= 150_000  # what aiohttp handed over before the break

    stream = ResultStream(results)
    report = await download(session, job.download_url, dest, sink=stream)
    stream.finish()
    assert report.resumed_from == partial and report.crc32c_checked
    assert results_of(results) == sb.expected_results("tweets", ids)


@pytest.mark.parametrize("cut", [1, 3000, 100_001])
async def test_a_resumed_download_feeds_the_prefix_on_disk_first(
    api: XApi, session: aiohttp.ClientSession, tmp_path: Path, cut: int
) -> None:
    """After kill -9 only the file on disk is left: the next process's sink is fed that
    prefix (cut anywhere, mid-line included), then the rest; the output is the whole body's."""
    job, _ = await completed_job(api, session, tmp_path, count=20000)
    whole = tmp_path / "whole"
    await download(session, job.download_url, whole)
    expected = normalise_results(whole, tmp_path / "expected.jsonl")
    dest, results = tmp_path / "download", tmp_path / "results.jsonl"
    dest.write_bytes(whole.read_bytes()[:cut])

    stream = ResultStream(results)
    report = await download(session, job.download_url, dest, sink=stream)
    assert not results.exists()  # placed only by finish(), once the crc32c is checked
    normalised = stream.finish()
    assert report.resumed_from == cut and report.crc32c_checked
    assert results.read_bytes() == (tmp_path / "expected.jsonl").read_bytes()
    assert normalised == expected and normalised.affected > 0


async def test_a_restarted_download_starts_the_sink_over(
    sb: Sandbox, api: XApi, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    job, ids = await completed_job(api, session, tmp_path)
    dest, results = tmp_path / "download", tmp_path / "results.jsonl"
    await download(session, job.download_url, dest)  # complete: a range past its end is 416
    stream = ResultStream(results)
    report = await download(session, job.download_url, dest, sink=stream)
    normalised = stream.finish()
    assert report.resumed_from == 0
    assert normalised.affected == len(results_of(results)) == len(sb.expected_results(
        "tweets", ids))


async def test_a_corrupt_line_ends_the_download_with_its_line_number(
    api: XApi, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    job, _ = await completed_job(api, session, tmp_path, count=20000)
    whole = tmp_path / "whole"
    await download(session, job.download_url, whole)
    body = whole.read_bytes()
    lines = body.split(b"\n")
    middle = len(lines) // 2  # well inside a block, far from any piece's edge
    lines[middle] = lines[middle][:20] + b"\x00" + lines[middle][21:]
    dest = tmp_path / "download"
    dest.write_bytes(b"\n".join(lines)[: len(body) // 2 + 5000])  # a resumed prefix
    stream = ResultStream(tmp_path / "results.jsonl")
    with pytest.raises(IntegrityError) as caught:
        await download(session, job.download_url, dest, sink=stream)
    stream.abort()
    assert f"result line {middle + 1} " in str(caught.value)
    assert not (tmp_path / "results.jsonl").exists()
