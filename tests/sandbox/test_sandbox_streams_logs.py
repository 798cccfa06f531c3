"""Issue points 9 and 10: bodies stream to and from disk; one log line per request."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from sandbox_helpers import create_job, get_job, ids_body, signed, tweet_ids, upload
from structlog.testing import capture_logs

from orchestrator.sandbox import Sandbox


async def wait_for(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def stored_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.glob("*/*.submission"))


async def test_upload_reaches_disk_before_the_body_ends(
    sb: Sandbox, http: aiohttp.ClientSession
) -> None:
    job = await create_job(http, sb)
    first = ids_body(tweet_ids(400_000))  # 8 MB
    second = ids_body(tweet_ids(100_000, start=1_500_000_000_000_000_000))

    async def body() -> AsyncIterator[bytes]:
        for offset in range(0, len(first), 1 << 20):
            yield first[offset : offset + (1 << 20)]
        # The sandbox has the first part on disk while we still hold the rest back.
        await wait_for(lambda: stored_bytes(sb.data_dir) >= 4 << 20)
        yield second

    async with http.put(
        signed(job["upload_url"]), data=body(), headers={"Content-Type": "text/plain"}
    ) as response:
        assert response.status == 200
        assert response.headers["x-goog-stored-content-length"] == str(len(first) + len(second))
    assert sb.jobs()[0]["uploaded_ids"] == 500_000


async def test_download_streams_from_disk(start_sandbox, http: aiohttp.ClientSession) -> None:
    sandbox = await start_sandbox(affected_fraction=1.0)
    job = await create_job(http, sandbox)
    await upload(http, job, ids_body(tweet_ids(200_000)))
    job = await get_job(http, sandbox, job["id"])
    tracemalloc.start()
    try:
        received = 0
        async with http.get(signed(job["download_url"])) as response:
            size = int(response.headers["Content-Length"])
            async for chunk in response.content.iter_chunked(256 << 10):
                received += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == size > 20 << 20
    assert peak < 8 << 20  # a 20 MB result never sits in memory


async def test_one_log_event_per_request_without_query(
    sb: Sandbox, http: aiohttp.ClientSession
) -> None:
    with capture_logs() as events:
        job = await create_job(http, sb)
        await upload(http, job, ids_body(tweet_ids(5)))
        await get_job(http, sb, job["id"])
        async with http.get(signed(job["download_url"])) as response:
            await response.read()
        async with http.get(f"{sb.base_url}/2/compliance/jobs?type=tweets") as response:
            assert response.status == 401
    requests = [event for event in events if event["event"] == "sandbox.request"]
    assert [(e["method"], e["status"]) for e in requests] == [
        ("POST", 200),
        ("PUT", 200),
        ("GET", 200),
        ("GET", 200),
        ("GET", 401),
    ]
    assert [(e["method"], e["path"], e["status"]) for e in requests] == sb.request_log
    assert requests[1]["path"] == job["upload_url"].split("?")[0].removeprefix(sb.base_url)
    text = repr(events)
    assert "X-Goog" not in text and "?" not in text and sb.token not in text


async def test_interrupted_upload_leaves_nothing_behind(
    sb: Sandbox, http: aiohttp.ClientSession
) -> None:
    job = await create_job(http, sb)
    url = urlsplit(job["upload_url"])
    _reader, writer = await asyncio.open_connection(url.hostname, url.port)
    writer.write(
        f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n"
        "Content-Type: text/plain\r\nContent-Length: 10000000\r\n\r\n".encode()
    )
    writer.write(b"1446017776678801409\n" * 300_000)  # 6 of the promised 10 MB
    await writer.drain()
    await wait_for(lambda: stored_bytes(sb.data_dir) > 0)
    writer.close()
    await writer.wait_closed()
    await wait_for(lambda: len(sb.request_log) == 2)
    assert sb.request_log[-1] == ("PUT", url.path, 0)
    assert stored_bytes(sb.data_dir) == 0
    assert not list((sb.data_dir / job["id"]).iterdir())
    assert (await get_job(http, sb, job["id"]))["status"] == "created"
    await upload(http, job, ids_body(tweet_ids(10)))
    assert sb.jobs()[0]["uploaded_ids"] == 10
