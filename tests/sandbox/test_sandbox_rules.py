"""Issue points 3, 4 and 5: the one-job rule, rate limits, the job lifecycle."""

from __future__ import annotations

import aiohttp
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

CONFLICT = {
    "title": "Conflict",
    "detail": "You cannot create a new job if one is already in progress.",
    "type": "https://api.twitter.com/2/problems/conflict",
    "status": 409,
}


async def try_create(http: aiohttp.ClientSession, sandbox: Sandbox, job_type: str) -> int:
    async with http.post(
        f"{sandbox.base_url}/2/compliance/jobs", json={"type": job_type}, headers=auth(sandbox)
    ) as response:
        if response.status == 409:
            assert await response.json(content_type=None) == CONFLICT
        return response.status


# -- point 3 ----------------------------------------------------------------------------


async def test_global_rule_blocks_any_second_job(
    start_sandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await start_sandbox()  # concurrency="global" is the default
    await create_job(http, sandbox)
    assert await try_create(http, sandbox, "tweets") == 409
    assert await try_create(http, sandbox, "users") == 409
    assert len(sandbox.jobs()) == 1


async def test_per_type_rule_matches_production(start_sandbox, http: aiohttp.ClientSession) -> None:
    sandbox = await start_sandbox(concurrency="per-type")
    await create_job(http, sandbox, "tweets")
    assert await try_create(http, sandbox, "users") == 200  # as recorded 2021-11-16
    assert await try_create(http, sandbox, "tweets") == 409
    assert await try_create(http, sandbox, "users") == 409


async def test_in_progress_blocks_and_complete_or_expired_frees(
    start_sandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await start_sandbox(processing_time_s=60)
    job = await create_job(http, sandbox)
    await upload(http, job, ids_body(tweet_ids(5)))
    assert (await get_job(http, sandbox, job["id"]))["status"] == "in_progress"
    sandbox.clock.advance(1000)  # past the upload window, but still processing? no: 60 s
    assert (await get_job(http, sandbox, job["id"]))["status"] == "complete"
    second = await create_job(http, sandbox)  # complete frees the slot
    assert await try_create(http, sandbox, "tweets") == 409
    sandbox.clock.advance(900)  # second expires unused -> frees the slot
    assert (await get_job(http, sandbox, second["id"]))["status"] == "expired"
    assert await try_create(http, sandbox, "tweets") == 200


async def test_processing_job_blocks_until_done(start_sandbox, http: aiohttp.ClientSession) -> None:
    sandbox = await start_sandbox(processing_time_s=3600)
    job = await create_job(http, sandbox)
    await upload(http, job, ids_body(tweet_ids(3)))
    sandbox.clock.advance(1800)
    assert (await get_job(http, sandbox, job["id"]))["status"] == "in_progress"
    assert await try_create(http, sandbox, "tweets") == 409


# -- point 4 ----------------------------------------------------------------------------


async def test_rate_limit_headers_and_separate_buckets(
    start_sandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await start_sandbox(concurrency="per-type")
    start = int(sandbox.clock.timestamp())
    async with http.post(
        f"{sandbox.base_url}/2/compliance/jobs", json={"type": "tweets"}, headers=auth(sandbox)
    ) as response:
        created = (await response.json())["data"]
        assert response.headers["x-rate-limit-limit"] == "150"
        assert response.headers["x-rate-limit-remaining"] == "149"
        reset = int(response.headers["x-rate-limit-reset"])
        assert start + 900 <= reset <= start + 902  # first request + 900 s
    async with http.get(
        f"{sandbox.base_url}/2/compliance/jobs/{created['id']}", headers=auth(sandbox)
    ) as response:
        assert response.headers["x-rate-limit-remaining"] == "149"  # separate bucket
    for job_type, remaining in (("tweets", "149"), ("users", "148")):
        async with http.get(
            f"{sandbox.base_url}/2/compliance/jobs?type={job_type}", headers=auth(sandbox)
        ) as response:
            assert response.headers["x-rate-limit-remaining"] == remaining  # shared by types
    async with http.post(
        f"{sandbox.base_url}/2/compliance/jobs", json={"type": "users"}, headers=auth(sandbox)
    ) as response:
        assert response.headers["x-rate-limit-remaining"] == "148"


async def test_rate_limit_exceeded_then_window_resets(
    start_sandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await start_sandbox(rate_limit=3, rate_window_s=60)
    url = f"{sandbox.base_url}/2/compliance/jobs?type=tweets"
    for expected_remaining in ("2", "1", "0"):
        async with http.get(url, headers=auth(sandbox)) as response:
            assert response.status == 200
            assert response.headers["x-rate-limit-remaining"] == expected_remaining
    async with http.get(url, headers=auth(sandbox)) as response:
        assert response.status == 429
        assert await response.json(content_type=None) == TOO_MANY_REQUESTS
        assert response.headers["x-rate-limit-remaining"] == "0"
        assert response.headers["x-rate-limit-limit"] == "3"
        reset = int(response.headers["x-rate-limit-reset"])
    assert reset > sandbox.clock.timestamp()
    sandbox.clock.advance(61)
    async with http.get(url, headers=auth(sandbox)) as response:
        assert response.status == 200
        assert response.headers["x-rate-limit-remaining"] == "2"
    # Rejected with 429 does not create anything; other endpoints were unaffected.
    assert sandbox.jobs() == []


# -- point 5 ----------------------------------------------------------------------------


async def test_lifecycle_created_in_progress_complete(
    start_sandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await start_sandbox(processing_time_s=30)
    job = await create_job(http, sandbox)
    assert job["status"] == "created"
    await upload(http, job, ids_body(tweet_ids(10)))
    assert (await get_job(http, sandbox, job["id"]))["status"] == "in_progress"
    sandbox.clock.advance(29)
    assert (await get_job(http, sandbox, job["id"]))["status"] == "in_progress"
    sandbox.clock.advance(1)
    done = await get_job(http, sandbox, job["id"])
    assert done["status"] == "complete"
    assert "error" not in done
    await download(http, done)
    assert sandbox.jobs()[0]["uploaded_ids"] == 10


async def test_processing_time_per_id(start_sandbox, http: aiohttp.ClientSession) -> None:
    sandbox = await start_sandbox(processing_time_s=0, processing_time_per_id_s=1.0)
    job = await create_job(http, sandbox)
    await upload(http, job, ids_body(tweet_ids(100)))
    sandbox.clock.advance(99)
    assert (await get_job(http, sandbox, job["id"]))["status"] == "in_progress"
    sandbox.clock.advance(1)
    assert (await get_job(http, sandbox, job["id"]))["status"] == "complete"


async def test_never_uploaded_job_expires(start_sandbox, http: aiohttp.ClientSession) -> None:
    sandbox = await start_sandbox()
    job = await create_job(http, sandbox)
    sandbox.clock.advance(899)
    assert (await get_job(http, sandbox, job["id"]))["status"] == "created"
    sandbox.clock.advance(1)
    expired = await get_job(http, sandbox, job["id"])
    assert expired["status"] == "expired"
    assert expired["upload_url"] == job["upload_url"]  # URLs stay in the object
    assert "error" not in expired


async def test_injected_failures(start_sandbox, http: aiohttp.ClientSession) -> None:
    sandbox = await start_sandbox()
    sandbox.faults.fail_next_jobs(1, error="Something broke")
    job = await create_job(http, sandbox)
    assert job["status"] == "created" and "error" not in job
    await upload(http, job, ids_body(tweet_ids(3)))
    failed = await get_job(http, sandbox, job["id"])
    assert failed["status"] == "failed"
    assert failed["error"] == "Something broke"
    async with http.get(
        f"{sandbox.base_url}/2/compliance/jobs?type=tweets&status=failed", headers=auth(sandbox)
    ) as response:
        assert [j["id"] for j in (await response.json())["data"]] == [job["id"]]
    # The next job is fine again; results of a failed job never appear.
    ok = await create_job(http, sandbox)
    await upload(http, ok, ids_body(tweet_ids(3)))
    assert (await get_job(http, sandbox, ok["id"]))["status"] == "complete"
    async with http.get(signed(failed["download_url"])) as response:
        assert response.status == 404


async def test_fail_fraction_is_deterministic(start_sandbox, http: aiohttp.ClientSession) -> None:
    outcomes = []
    for _ in range(2):
        sandbox = await start_sandbox(fail_fraction=0.5, fail_error="Boom")
        statuses = []
        for _ in range(8):
            job = await create_job(http, sandbox)
            await upload(http, job, ids_body(tweet_ids(2)))
            statuses.append((await get_job(http, sandbox, job["id"]))["status"])
        outcomes.append(statuses)
    assert outcomes[0] == outcomes[1]
    assert set(outcomes[0]) == {"failed", "complete"}
