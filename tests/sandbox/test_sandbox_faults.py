"""Issue point 8: scripted faults, clock and windows, validation of uploaded bodies."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from sandbox_helpers import (
    auth,
    create_job,
    download,
    get_job,
    ids_body,
    signed,
    tweet_ids,
    upload,
)
from sandbox_recorded import TOO_MANY_REQUESTS

from orchestrator.sandbox import Sandbox
from orchestrator.sandbox.faults import parse_fault_spec


@pytest.mark.parametrize("kind", ["429", "500", "503"])
async def test_api_status_faults_then_recovery(
    sb: Sandbox, http: aiohttp.ClientSession, kind: str
) -> None:
    sb.faults.add("create", kind, count=2, retry_after=5)
    url = f"{sb.base_url}/2/compliance/jobs"
    for _ in range(2):
        async with http.post(url, json={"type": "tweets"}, headers=auth(sb)) as response:
            assert response.status == int(kind)
            body = await response.json(content_type=None)
            assert body["status"] == int(kind)
            if kind == "429":
                assert body == TOO_MANY_REQUESTS
                assert response.headers["x-rate-limit-remaining"] == "0"
                wait = int(response.headers["x-rate-limit-reset"]) - sb.clock.timestamp()
                assert 4 <= wait <= 6
    assert sb.jobs() == []
    await create_job(http, sb)
    assert [status for _, _, status in sb.request_log] == [int(kind)] * 2 + [200]


async def test_faults_only_hit_their_endpoint(sb: Sandbox, http: aiohttp.ClientSession) -> None:
    sb.faults.add("list", "503")
    job = await create_job(http, sb)  # create is unaffected
    await get_job(http, sb, job["id"])
    async with http.get(
        f"{sb.base_url}/2/compliance/jobs?type=tweets", headers=auth(sb)
    ) as response:
        assert response.status == 503
    assert sb.faults.pending() == []


async def test_reset_drops_the_connection(sb: Sandbox, http: aiohttp.ClientSession) -> None:
    # Two: aiohttp (>= 3.10) silently retries an idempotent request once after a disconnect.
    sb.faults.add("get", "reset", count=2)
    job = await create_job(http, sb)
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(
            f"{sb.base_url}/2/compliance/jobs/{job['id']}", headers=auth(sb)
        ) as response:
            await response.read()
    assert sb.request_log[-2:] == [("GET", f"/2/compliance/jobs/{job['id']}", 0)] * 2
    await get_job(http, sb, job["id"])


async def test_slow_response(sb: Sandbox, http: aiohttp.ClientSession) -> None:
    sb.faults.add("get", "slow", delay=30)
    job = await create_job(http, sb)
    with pytest.raises(asyncio.TimeoutError):
        async with http.get(
            f"{sb.base_url}/2/compliance/jobs/{job['id']}",
            headers=auth(sb),
            timeout=aiohttp.ClientTimeout(total=0.3),
        ):
            pass
    await get_job(http, sb, job["id"])


async def test_truncated_download_then_full(sb: Sandbox, http: aiohttp.ClientSession) -> None:
    job = await create_job(http, sb)
    await upload(http, job, ids_body(tweet_ids(500)))
    full = await download(http, job)
    sb.faults.add("download", "truncate", after_bytes=100)
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.get(signed(job["download_url"])) as response:
            assert response.headers["Content-Length"] == str(len(full))
            await response.read()
    assert await download(http, job) == full


async def test_truncated_api_body(sb: Sandbox, http: aiohttp.ClientSession) -> None:
    job = await create_job(http, sb)
    sb.faults.add("get", "truncate")
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.get(
            f"{sb.base_url}/2/compliance/jobs/{job['id']}", headers=auth(sb)
        ) as response:
            await response.read()


@pytest.mark.parametrize("kind", ["500", "503", "429"])
async def test_upload_faults_leave_the_job_uploadable(
    sb: Sandbox, http: aiohttp.ClientSession, kind: str
) -> None:
    job = await create_job(http, sb)
    sb.faults.add("upload", kind, count=2)
    for _ in range(2):
        async with http.put(
            signed(job["upload_url"]),
            data=ids_body(tweet_ids(10)),
            headers={"Content-Type": "text/plain"},
        ) as response:
            assert response.status == int(kind)
            assert "<Error><Code>" in await response.text()
    assert (await get_job(http, sb, job["id"]))["status"] == "created"
    await upload(http, job, ids_body(tweet_ids(10)))
    assert (await get_job(http, sb, job["id"]))["status"] == "complete"


async def test_upload_reset_midway_keeps_nothing(sb: Sandbox, http: aiohttp.ClientSession) -> None:
    job = await create_job(http, sb)
    sb.faults.add("upload", "reset", count=2, after_bytes=1000)
    with pytest.raises(aiohttp.ClientError):
        async with http.put(
            signed(job["upload_url"]),
            data=ids_body(tweet_ids(5000)),
            headers={"Content-Type": "text/plain"},
        ) as response:
            await response.read()
    assert (await get_job(http, sb, job["id"]))["status"] == "created"
    await upload(http, job, ids_body(tweet_ids(5000)))
    assert sb.jobs()[0]["uploaded_ids"] == 5000


async def test_resumable_reset_keeps_persisted_bytes(
    sb: Sandbox, http: aiohttp.ClientSession
) -> None:
    job = await create_job(http, sb, resumable=True)
    async with http.post(
        signed(job["upload_url"]),
        headers={
            "Content-Type": "text/plain",
            "Content-Length": "0",
            "x-goog-resumable": "start",
        },
    ) as response:
        session = response.headers["Location"]
    body = ids_body(tweet_ids(30_000))
    sb.faults.add("upload", "reset", count=2, after_bytes=300_000)
    with pytest.raises(aiohttp.ClientError):
        async with http.put(
            signed(session),
            data=body,
            headers={"Content-Range": f"bytes 0-{len(body) - 1}/{len(body)}"},
        ) as r:
            await r.read()
    async with http.put(signed(session), headers={"Content-Range": f"bytes */{len(body)}"}) as r:
        assert r.status == 308
        persisted = int(r.headers["Range"].split("-")[1]) + 1
    assert 0 < persisted <= 300_000
    rest = body[persisted:]
    async with http.put(
        signed(session),
        data=rest,
        headers={"Content-Range": f"bytes {persisted}-{len(body) - 1}/{len(body)}"},
    ) as r:
        assert r.status == 200
    assert sb.jobs()[0]["uploaded_ids"] == 30_000


async def test_wildcard_and_fifo(sb: Sandbox, http: aiohttp.ClientSession) -> None:
    sb.faults.add("*", "503")
    sb.faults.add("create", "500")
    url = f"{sb.base_url}/2/compliance/jobs"
    statuses = []
    for _ in range(3):
        async with http.post(url, json={"type": "tweets"}, headers=auth(sb)) as response:
            statuses.append(response.status)
    assert statuses == [503, 500, 200]


def test_fault_specs_from_the_command_line() -> None:
    assert parse_fault_spec("upload:500:3") == {"endpoint": "upload", "kind": "500", "count": 3}
    assert parse_fault_spec("get:slow:2:1.5") == {
        "endpoint": "get",
        "kind": "slow",
        "count": 2,
        "delay": 1.5,
    }
    assert parse_fault_spec("download:truncate:1:100")["after_bytes"] == 100
    assert parse_fault_spec("create:429:1:30")["retry_after"] == 30.0
    assert parse_fault_spec("*:reset") == {"endpoint": "*", "kind": "reset"}
    for bad in ("upload", "upload:418", "nowhere:500", "get:500:zero", "get:500:1:2"):
        with pytest.raises(ValueError):
            parse_fault_spec(bad)


async def test_clock_moves_everything(sb: Sandbox, http: aiohttp.ClientSession) -> None:
    before = sb.clock.now()
    after = sb.clock.advance(3600)
    assert (after - before).total_seconds() >= 3600
    assert sb.clock.now() >= after
    job = await create_job(http, sb)
    assert job["created_at"][:13] == after.strftime("%Y-%m-%dT%H")
    with pytest.raises(ValueError):
        sb.clock.advance(-1)


# -- validation of uploaded bodies ----------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"1446017776678801409\r\n1446017776678801410\r\n",
        b"1446017776678801409\n1446017776678801410",
        b"1446017776678801409\n\n1446017776678801410\n\n",
        b" 1446017776678801409 \n1446017776678801410\t\n",
    ],
    ids=["crlf", "no-final-newline", "blank-lines", "surrounding-space"],
)
async def test_plausible_bodies_are_accepted(
    start_sandbox, http: aiohttp.ClientSession, body: bytes
) -> None:
    sandbox = await start_sandbox(affected_fraction=1.0)
    job = await create_job(http, sandbox)
    await upload(http, job, body)
    done = await get_job(http, sandbox, job["id"])
    assert done["status"] == "complete"
    assert sandbox.jobs()[0]["uploaded_ids"] == 2
    ids = {
        line["id"]
        for line in __import__("json").loads(
            "[" + ",".join(x.decode() for x in (await download(http, done)).split(b"\n") if x) + "]"
        )
    }
    assert ids == {"1446017776678801409", "1446017776678801410"}


async def test_empty_upload_completes_with_empty_results(
    sb: Sandbox, http: aiohttp.ClientSession
) -> None:
    job = await create_job(http, sb)
    await upload(http, job, b"")
    assert (await get_job(http, sb, job["id"]))["status"] == "complete"
    assert sb.jobs()[0]["uploaded_ids"] == 0
    assert await download(http, job) == b""


@pytest.mark.parametrize("kind", ["503", "429"])
async def test_download_faults(sb: Sandbox, http: aiohttp.ClientSession, kind: str) -> None:
    job = await create_job(http, sb)
    await upload(http, job, ids_body(tweet_ids(100)))
    sb.faults.add("download", kind)
    async with http.get(signed(job["download_url"])) as response:
        assert response.status == int(kind)
        assert response.headers["Content-Type"] == "application/xml; charset=UTF-8"
    await download(http, job)


@pytest.mark.parametrize(
    ("body", "line"),
    [
        (b"1446017776678801409\nhello\n", 2),
        (b"1446017776678801409,1446017776678801410\n", 1),
        (b"12345678901234567890\n", 1),
        (b'{"id": "1446017776678801409"}\n', 1),
        (b"\x00\x01\x02", 1),
        (b"1\n2\n3\n-4\n", 4),
    ],
)
async def test_non_id_content_fails_the_job(
    sb: Sandbox, http: aiohttp.ClientSession, body: bytes, line: int
) -> None:
    job = await create_job(http, sb)
    await upload(http, job, body)  # storage accepts anything; processing fails
    failed = await get_job(http, sb, job["id"])
    assert failed["status"] == "failed"
    assert f"line {line}" in failed["error"]
    async with http.get(signed(failed["download_url"])) as response:
        assert response.status == 404


def test_clock_freeze_and_offset() -> None:
    from datetime import UTC, datetime, timedelta

    from orchestrator.sandbox import SandboxClock

    start = datetime(2021, 10, 7, 7, 41, 18, tzinfo=UTC)
    clock = SandboxClock(start)
    assert abs((clock.now() - start).total_seconds()) < 5
    frozen = clock.freeze()
    assert clock.now() == frozen and clock.frozen
    assert clock.advance(60) == frozen + timedelta(seconds=60)
    clock.unfreeze()
    assert clock.now() >= frozen + timedelta(seconds=60)  # never jumps back
