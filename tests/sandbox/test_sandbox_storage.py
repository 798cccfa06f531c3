"""Issue point 6: signed URLs, GCS XML errors, simple and resumable uploads, downloads."""

from __future__ import annotations

import base64
import hashlib
import re

import aiohttp
import google_crc32c
import pytest
from sandbox_helpers import (
    create_job,
    download,
    get_job,
    ids_body,
    parse_results,
    signed,
    tweet_ids,
    upload,
)
from sandbox_recorded import DOWNLOAD_HEADERS, UPLOAD_HEADERS

from orchestrator.sandbox import Sandbox

XML = "application/xml; charset=UTF-8"
CHUNK = 256 * 1024


def xml_code(text: str) -> str:
    match = re.search(r"<Code>([^<]+)</Code>", text)
    assert match, text
    assert text.startswith("<?xml version='1.0' encoding='UTF-8'?><Error>")
    return match.group(1)


def crc32c_b64(data: bytes) -> str:
    return base64.b64encode(google_crc32c.Checksum(data).digest()).decode()


async def put(
    http: aiohttp.ClientSession, url: str, body: bytes, content_type: str = "text/plain"
) -> tuple[int, str]:
    async with http.put(signed(url), data=body, headers={"Content-Type": content_type}) as r:
        return r.status, await r.text()


# -- simple upload ------------------------------------------------------------------------


async def test_simple_put_answers_like_gcs(sb: Sandbox, http: aiohttp.ClientSession) -> None:
    job = await create_job(http, sb)
    body = ids_body(tweet_ids(20))
    assert len(body) == 400  # like the recorded upload: 20 x (19 digits + \n)
    async with http.put(
        signed(job["upload_url"]), data=body, headers={"Content-Type": "text/plain"}
    ) as response:
        assert response.status == 200
        assert await response.read() == b""
        for header in UPLOAD_HEADERS:
            assert header in response.headers, header
        md5 = hashlib.md5(body, usedforsecurity=False)
        assert response.headers["ETag"] == f'"{md5.hexdigest()}"'
        assert response.headers.getall("x-goog-hash") == [
            f"crc32c={crc32c_b64(body)}",
            f"md5={base64.b64encode(md5.digest()).decode()}",
        ]
        assert response.headers["x-goog-stored-content-length"] == "400"
    assert (await get_job(http, sb, job["id"]))["status"] == "complete"


def tamper_cases(url: str) -> dict[str, str]:
    base, _, query = url.partition("?")
    pairs = query.split("&")
    return {
        "decoded %40": url.replace("%40", "@"),
        "decoded %2F": url.replace("%2F", "/"),
        "decoded %3B": url.replace("%3B", ";"),
        "reordered": f"{base}?{'&'.join([pairs[1], pairs[0], *pairs[2:]])}",
        "longer expiry": url.replace("X-Goog-Expires=900", "X-Goog-Expires=9000"),
        "other signature": re.sub(r"X-Goog-Signature=[0-9a-f]{4}", "X-Goog-Signature=0000", url),
        "other object": url.replace("/submission/", "/delivery/", 1),
    }


async def test_reencoded_or_tampered_url_gets_signature_mismatch(
    sb: Sandbox, http: aiohttp.ClientSession
) -> None:
    job = await create_job(http, sb)
    for case, url in tamper_cases(job["upload_url"]).items():
        async with http.put(signed(url), data=b"1\n", headers={"Content-Type": "text/plain"}) as r:
            text = await r.text()
            assert r.status == 403, case
            assert r.headers["Content-Type"] == XML
            assert xml_code(text) == "SignatureDoesNotMatch", case
    assert (await get_job(http, sb, job["id"]))["status"] == "created"


async def test_yarl_default_encoding_is_refused(sb: Sandbox, http: aiohttp.ClientSession) -> None:
    """aiohttp/yarl re-quote URLs unless told `encoded=True` (aiohttp#5512)."""
    job = await create_job(http, sb)
    async with http.put(
        job["upload_url"], data=b"1\n", headers={"Content-Type": "text/plain"}
    ) as response:
        assert response.status == 403
        assert xml_code(await response.text()) == "SignatureDoesNotMatch"


@pytest.mark.parametrize(
    "content_type", ["text/plain; charset=utf-8", "application/octet-stream", "text/csv"]
)
async def test_changed_signed_header_is_refused(
    sb: Sandbox, http: aiohttp.ClientSession, content_type: str
) -> None:
    job = await create_job(http, sb)
    status, text = await put(http, job["upload_url"], b"1\n", content_type)
    assert status == 403
    assert xml_code(text) == "SignatureDoesNotMatch"
    assert "<CanonicalRequest>" in text and "<StringToSign>" in text


async def test_wrong_method_and_missing_signature(sb: Sandbox, http: aiohttp.ClientSession) -> None:
    job = await create_job(http, sb)
    async with http.post(
        signed(job["upload_url"]), data=b"1\n", headers={"Content-Type": "text/plain"}
    ) as response:
        assert response.status == 403
        assert xml_code(await response.text()) == "SignatureDoesNotMatch"
    bare = job["upload_url"].split("?")[0]
    async with http.put(bare, data=b"1\n", headers={"Content-Type": "text/plain"}) as response:
        assert response.status == 403
        assert xml_code(await response.text()) == "AccessDenied"


async def test_upload_after_window_gets_expired_token(
    sb: Sandbox, http: aiohttp.ClientSession
) -> None:
    job = await create_job(http, sb)
    sb.clock.advance(900)
    status, text = await put(http, job["upload_url"], ids_body(tweet_ids(2)))
    assert status == 400
    assert xml_code(text) == "ExpiredToken"
    expires = job["upload_expires_at"].replace(".000Z", "+00:00")
    assert f"Request signature expired at: {expires}" in text
    assert (await get_job(http, sb, job["id"]))["status"] == "expired"


async def test_shortened_windows_apply_to_new_jobs(
    sb: Sandbox, http: aiohttp.ClientSession
) -> None:
    sb.configure(upload_window_s=5, download_window_s=60)
    job = await create_job(http, sb)
    assert "X-Goog-Expires=5&" in job["upload_url"]
    sb.clock.advance(5)
    status, text = await put(http, job["upload_url"], ids_body(tweet_ids(2)))
    assert (status, xml_code(text)) == (400, "ExpiredToken")


# -- download ---------------------------------------------------------------------------


async def test_download_before_completion_is_no_such_key(
    start_sandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await start_sandbox(processing_time_s=10)
    job = await create_job(http, sandbox)
    for _ in range(2):  # before the upload, and while in progress
        async with http.get(signed(job["download_url"])) as response:
            assert response.status == 404
            assert response.headers["Content-Type"] == XML
            assert xml_code(await response.text()) == "NoSuchKey"
        await upload(http, job, ids_body(tweet_ids(30)))
    sandbox.clock.advance(10)
    assert len(await download(http, job)) > 0


async def test_download_headers_and_ranges(start_sandbox, http: aiohttp.ClientSession) -> None:
    sandbox = await start_sandbox(affected_fraction=0.5)
    job = await create_job(http, sandbox)
    await upload(http, job, ids_body(tweet_ids(100)))
    async with http.get(signed(job["download_url"])) as response:
        assert response.status == 200
        body = await response.read()
        assert response.headers["Content-Type"] == "application/octet-stream"
        for header in DOWNLOAD_HEADERS:
            assert header in response.headers, header
        assert response.headers["Content-Length"] == str(len(body))
        assert response.headers["Accept-Ranges"] == "bytes"
        assert f"crc32c={crc32c_b64(body)}" in response.headers.getall("x-goog-hash")
    size = len(body)
    cases = {
        "bytes=0-9": (0, 9),
        "bytes=-5": (size - 5, size - 1),
        "bytes=10-": (10, size - 1),
        f"bytes=5-{size + 100}": (5, size - 1),
    }
    for header, (first, last) in cases.items():
        async with http.get(signed(job["download_url"]), headers={"Range": header}) as response:
            assert response.status == 206, header
            assert await response.read() == body[first : last + 1], header
            assert response.headers["Content-Range"] == f"bytes {first}-{last}/{size}"
    async with http.get(
        signed(job["download_url"]), headers={"Range": f"bytes={len(body)}-"}
    ) as response:
        assert response.status == 416
        assert xml_code(await response.text()) == "InvalidRange"


async def test_download_after_expiry(sb: Sandbox, http: aiohttp.ClientSession) -> None:
    job = await create_job(http, sb)
    await upload(http, job, ids_body(tweet_ids(10)))
    sb.clock.advance(7 * 86400)
    async with http.get(signed(job["download_url"])) as response:
        assert response.status == 400
        assert xml_code(await response.text()) == "ExpiredToken"
    assert (await get_job(http, sb, job["id"]))["status"] == "complete"


async def test_download_url_is_get_only(sb: Sandbox, http: aiohttp.ClientSession) -> None:
    job = await create_job(http, sb)
    await upload(http, job, ids_body(tweet_ids(10)))
    async with http.put(signed(job["download_url"]), data=b"x") as response:
        assert response.status == 403


# -- resumable --------------------------------------------------------------------------

START_HEADERS = {"Content-Type": "text/plain", "Content-Length": "0", "x-goog-resumable": "start"}


async def start_session(http: aiohttp.ClientSession, job: dict[str, object]) -> str:
    async with http.post(signed(str(job["upload_url"])), headers=START_HEADERS) as response:
        assert response.status == 201, await response.text()
        location = response.headers["Location"]
    assert location.startswith(str(job["upload_url"]) + "&upload_id=")
    return location


async def put_range(
    http: aiohttp.ClientSession, session: str, data: bytes, content_range: str
) -> aiohttp.ClientResponse:
    async with http.put(
        signed(session), data=data, headers={"Content-Range": content_range}
    ) as response:
        await response.read()
        return response


async def test_resumable_upload_full_protocol(start_sandbox, http: aiohttp.ClientSession) -> None:
    sandbox = await start_sandbox(affected_fraction=0.2)
    job = await create_job(http, sandbox, resumable=True)
    ids = tweet_ids(40_000)
    body = ids_body(ids)
    total = len(body)
    assert total > 3 * CHUNK
    # A plain PUT, or a POST without the signed resumable headers, does not fit the URL.
    status, _ = await put(http, job["upload_url"], body)
    assert status == 403
    async with http.post(
        signed(job["upload_url"]), headers={"Content-Type": "text/plain"}
    ) as response:
        assert response.status == 403
    session = await start_session(http, job)

    response = await put_range(http, session, b"", f"bytes */{total}")
    assert response.status == 308 and "Range" not in response.headers
    response = await put_range(http, session, body[:CHUNK], f"bytes 0-{CHUNK - 1}/*")
    assert (response.status, response.headers["Range"]) == (308, f"bytes=0-{CHUNK - 1}")
    # Non-final chunks must be multiples of 256 KiB.
    response = await put_range(
        http, session, body[CHUNK : CHUNK + 1000], f"bytes {CHUNK}-{CHUNK + 999}/{total}"
    )
    assert response.status == 400
    response = await put_range(
        http, session, body[CHUNK : 2 * CHUNK], f"bytes {CHUNK}-{2 * CHUNK - 1}/{total}"
    )
    assert (response.status, response.headers["Range"]) == (308, f"bytes=0-{2 * CHUNK - 1}")
    # Status query, then a resend that overlaps what is persisted (the overlap is ignored).
    response = await put_range(http, session, b"", f"bytes */{total}")
    assert (response.status, response.headers["Range"]) == (308, f"bytes=0-{2 * CHUNK - 1}")
    response = await put_range(
        http, session, body[CHUNK : 3 * CHUNK], f"bytes {CHUNK}-{3 * CHUNK - 1}/{total}"
    )
    assert (response.status, response.headers["Range"]) == (308, f"bytes=0-{3 * CHUNK - 1}")
    # A gap is refused.
    response = await put_range(
        http, session, body[4 * CHUNK : 5 * CHUNK], f"bytes {4 * CHUNK}-{5 * CHUNK - 1}/{total}"
    )
    assert response.status == 400
    assert (await get_job(http, sandbox, job["id"]))["status"] == "created"
    response = await put_range(
        http, session, body[3 * CHUNK :], f"bytes {3 * CHUNK}-{total - 1}/{total}"
    )
    assert response.status == 200
    assert response.headers["x-goog-stored-content-length"] == str(total)
    response = await put_range(http, session, b"", f"bytes */{total}")
    assert response.status == 200
    done = await get_job(http, sandbox, job["id"])
    assert done["status"] == "complete"
    rows = parse_results(await download(http, done))
    assert {row["id"]: row for row in rows} == sandbox.expected_results("tweets", ids)
    assert sandbox.jobs()[0]["uploaded_ids"] == len(ids)


async def test_resumable_whole_file_and_cancel(sb: Sandbox, http: aiohttp.ClientSession) -> None:
    job = await create_job(http, sb, resumable=True)
    cancelled = await start_session(http, job)
    async with http.delete(signed(cancelled)) as response:
        assert response.status == 499
    response = await put_range(http, cancelled, b"1\n", "bytes 0-1/2")
    assert response.status == 404
    session = await start_session(http, job)
    body = ids_body(tweet_ids(50))
    async with http.put(signed(session), data=body) as response:
        assert response.status == 200
    assert (await get_job(http, sb, job["id"]))["status"] == "complete"


async def test_resumable_session_outlives_the_upload_window(
    sb: Sandbox, http: aiohttp.ClientSession
) -> None:
    """GCS: a session started while the URL was valid may finish later."""
    job = await create_job(http, sb, resumable=True)
    session = await start_session(http, job)
    body = ids_body(tweet_ids(20))
    sb.clock.advance(1000)
    response = await put_range(http, session, body, f"bytes 0-{len(body) - 1}/{len(body)}")
    assert response.status == 200
    assert (await get_job(http, sb, job["id"]))["status"] == "complete"
    async with http.post(signed(job["upload_url"]), headers=START_HEADERS) as late:
        assert late.status == 400  # but no new session can start on the expired URL
        assert xml_code(await late.text()) == "ExpiredToken"


async def test_second_upload_does_not_restart_processing(
    start_sandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await start_sandbox(processing_time_s=100)
    job = await create_job(http, sandbox)
    await upload(http, job, ids_body(tweet_ids(10)))
    sandbox.clock.advance(60)
    await upload(http, job, ids_body(tweet_ids(20)))
    sandbox.clock.advance(40)
    assert (await get_job(http, sandbox, job["id"]))["status"] == "complete"
    assert sandbox.jobs()[0]["uploaded_ids"] == 10
