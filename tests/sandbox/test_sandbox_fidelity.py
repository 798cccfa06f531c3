"""Issue 10, sandbox fidelity: the empty list shape, an honest request log for cut
responses, and the storage faults GCS really has (403 bodies, a corrupt body)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json

import aiohttp
import google_crc32c
import pytest
from sandbox_helpers import auth, create_job, download, get_job, ids_body, signed, tweet_ids, upload
from structlog.testing import capture_logs

from orchestrator.sandbox import Sandbox, SandboxRemote
from orchestrator.sandbox.command import config_from_args, configure_parser
from orchestrator.sandbox.faults import SPEC_HELP, parse_fault_spec


def _crc32c_b64(data: bytes) -> str:
    return base64.b64encode(google_crc32c.Checksum(data).digest()).decode()


def _goog_crc32c(response: aiohttp.ClientResponse) -> str:
    [crc] = [v.removeprefix("crc32c=") for v in response.headers.getall("x-goog-hash")
             if v.startswith("crc32c=")]
    return crc


def test_empty_list_meta_is_a_command_line_option() -> None:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    assert config_from_args(parser.parse_args([])).empty_list_meta is False
    assert config_from_args(parser.parse_args(["--empty-list-meta"])).empty_list_meta is True
    assert "--empty-list-meta" in parser.format_help()


# -- the request log says what the client got -------------------------------------------------


async def test_a_truncated_download_is_logged_as_cut(
    sb: Sandbox, http: aiohttp.ClientSession
) -> None:
    job = await create_job(http, sb)
    await upload(http, job, ids_body(tweet_ids(500)))
    full = await download(http, job)
    sb.faults.add("download", "truncate", after_bytes=100)
    with capture_logs() as logs, pytest.raises(aiohttp.ClientPayloadError):
        async with http.get(signed(job["download_url"])) as response:
            await response.read()
    path = job["download_url"].split("?")[0].removeprefix(sb.base_url)
    cut, whole = sb.request_log[-1], sb.request_log[-2]
    assert cut == ("GET", path, 200) and cut.truncated and cut.sent == 100
    assert not whole.truncated and whole.sent is None
    assert "truncated after 100 bytes" in repr(cut)
    [line] = [e for e in logs if e["event"] == "sandbox.request"]
    assert line["truncated"] is True and line["bytes_sent"] == 100
    assert line["content_length"] == len(full)
    # The HTTP control (another process's view) says the same.
    remote = SandboxRemote(sb.base_url)
    entries = await asyncio.to_thread(remote.requests)
    assert entries[-1].truncated and entries[-1].sent == 100 and entries[-1] == cut
    assert not entries[-2].truncated


async def test_a_truncated_api_body_is_logged_as_cut(
    sb: Sandbox, http: aiohttp.ClientSession
) -> None:
    job = await create_job(http, sb)
    sb.faults.add("get", "truncate", after_bytes=10)
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.get(
            f"{sb.base_url}/2/compliance/jobs/{job['id']}", headers=auth(sb)
        ) as response:
            await response.read()
    assert sb.request_log[-1].truncated and sb.request_log[-1].sent == 10


# -- 403 from storage, as GCS sends it ----------------------------------------------------------


@pytest.mark.parametrize("code", ["SignatureDoesNotMatch", "AccessDenied"])
async def test_a_403_on_upload_leaves_the_job_uploadable(
    sb: Sandbox, http: aiohttp.ClientSession, code: str
) -> None:
    job = await create_job(http, sb)
    sb.faults.add("upload", "403", code=code)
    async with http.put(signed(job["upload_url"]), data=ids_body(tweet_ids(10)),
                        headers={"Content-Type": "text/plain"}) as response:
        assert response.status == 403
        assert response.headers["Content-Type"] == "application/xml; charset=UTF-8"
        text = await response.text()
    assert text.startswith("<?xml version='1.0' encoding='UTF-8'?><Error>")
    assert f"<Code>{code}</Code><Message>Access denied.</Message>" in text
    if code == "AccessDenied":
        assert "does not have storage.objects.create access" in text
    else:
        assert "<StringToSign>GOOG4-RSA-SHA256" in text and "<CanonicalRequest>PUT\n" in text
    assert (await get_job(http, sb, job["id"]))["status"] == "created"
    await upload(http, job, ids_body(tweet_ids(10)))
    assert (await get_job(http, sb, job["id"]))["status"] == "complete"


@pytest.mark.parametrize("code", ["SignatureDoesNotMatch", "AccessDenied"])
async def test_a_403_on_download_then_the_results(
    sb: Sandbox, http: aiohttp.ClientSession, code: str
) -> None:
    job = await create_job(http, sb)
    await upload(http, job, ids_body(tweet_ids(100)))
    sb.faults.add("*", "403", code=code)  # "*": the next storage request, not an API one
    await get_job(http, sb, job["id"])
    async with http.get(signed(job["download_url"])) as response:
        assert response.status == 403
        text = await response.text()
    assert f"<Code>{code}</Code>" in text
    if code == "AccessDenied":
        assert "does not have storage.objects.get access" in text
    assert await download(http, job)
    assert [status for _, _, status in sb.request_log][-3:] == [200, 403, 200]


# -- a corrupt body: right length, right headers, wrong bytes --------------------------------


@pytest.mark.parametrize("after_bytes", [None, 0, 57])
async def test_a_corrupt_download_fails_its_crc32c(
    sb: Sandbox, http: aiohttp.ClientSession, after_bytes: int | None
) -> None:
    job = await create_job(http, sb)
    await upload(http, job, ids_body(tweet_ids(500)))
    async with http.get(signed(job["download_url"])) as response:
        full, crc = await response.read(), _goog_crc32c(response)
    assert _crc32c_b64(full) == crc
    sb.faults.add("download", "corrupt", after_bytes=after_bytes)
    async with http.get(signed(job["download_url"])) as response:
        assert response.status == 200
        body = await response.read()
        assert _goog_crc32c(response) == crc and response.content_length == len(full)
    assert len(body) == len(full) and body != full
    [at] = [i for i, (a, b) in enumerate(zip(body, full, strict=True)) if a != b]
    assert at == (len(full) // 2 if after_bytes is None else after_bytes)
    assert _crc32c_b64(body) != crc
    assert await download(http, job) == full  # one request only


async def test_a_corrupt_range_request_alters_a_byte_of_that_range(
    sb: Sandbox, http: aiohttp.ClientSession
) -> None:
    job = await create_job(http, sb)
    await upload(http, job, ids_body(tweet_ids(500)))
    full = await download(http, job)
    sb.faults.add("download", "corrupt", after_bytes=5)
    async with http.get(signed(job["download_url"]), headers={"Range": "bytes=100-199"}) as r:
        assert r.status == 206
        part = await r.read()
    assert len(part) == 100 and part[:5] == full[100:105] and part[5] != full[105]
    assert part[6:] == full[106:200]


# -- specs, help and validation ----------------------------------------------------------------


def test_new_fault_kinds_from_the_command_line() -> None:
    assert parse_fault_spec("upload:403") == {"endpoint": "upload", "kind": "403"}
    assert parse_fault_spec("download:403:2:AccessDenied") == {
        "endpoint": "download", "kind": "403", "count": 2, "code": "AccessDenied"}
    assert parse_fault_spec("download:corrupt:1:1000") == {
        "endpoint": "download", "kind": "corrupt", "count": 1, "after_bytes": 1000}
    for bad in ("get:403", "create:corrupt", "upload:corrupt", "upload:403:1:NoSuchKey"):
        with pytest.raises(ValueError):
            parse_fault_spec(bad)
    assert "403" in SPEC_HELP and "corrupt" in SPEC_HELP and "AccessDenied" in SPEC_HELP


async def test_storage_only_faults_wait_for_a_storage_request(
    sb: Sandbox, http: aiohttp.ClientSession
) -> None:
    sb.faults.add("*", "corrupt")
    job = await create_job(http, sb)  # API requests pass untouched
    await upload(http, job, ids_body(tweet_ids(50)))  # an upload too
    assert [f["kind"] for f in sb.faults.pending()] == ["corrupt"]
    async with http.get(signed(job["download_url"])) as response:
        body = await response.read()
    assert body != await download(http, job)
    assert sb.faults.pending() == []


async def test_http_control_takes_the_new_kinds(sb: Sandbox, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{sb.base_url}/_sandbox/faults",
                         data=json.dumps({"spec": "download:403:1:AccessDenied"})) as response:
        assert response.status == 200
    [pending] = sb.faults.pending()
    assert pending["kind"] == "403" and pending["code"] == "AccessDenied"
