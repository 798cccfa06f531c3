"""Issue points 1 and 2: the three endpoints' shapes, formats, headers, auth and validation."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import urlsplit

import aiohttp
import pytest
from sandbox_helpers import auth, create_job, get_job
from sandbox_recorded import (
    API_HEADERS,
    CREATE_TWEETS,
    CREATE_USERS,
    LIST_2022,
    LIST_BAD_PARAM,
    UNAUTHORIZED,
    job_of,
)

from orchestrator.core.model import parse_timestamp
from orchestrator.sandbox import Sandbox

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.000Z$")
JOB_ID = re.compile(r"^[0-9]{19}$")


def query_keys(url: str) -> list[str]:
    return [item.split("=", 1)[0] for item in urlsplit(url).query.split("&")]


def url_shape(url: str) -> tuple[list[str], list[str]]:
    """(path segments with ids replaced, query keys): what must match the recordings."""
    parts = urlsplit(url).path.strip("/").split("/")
    return [re.sub(r"\d{5,}", "N", part) for part in parts], query_keys(url)


async def test_create_matches_recorded_shape(sb: Sandbox, http: aiohttp.ClientSession) -> None:
    async with http.post(
        f"{sb.base_url}/2/compliance/jobs", json={"type": "tweets"}, headers=auth(sb)
    ) as response:
        assert response.status == 200  # the POST answers 200, not 201
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        for header in API_HEADERS:
            assert header in response.headers, header
        body = await response.json()
    job = job_of(body)
    recorded = job_of(CREATE_TWEETS)
    assert set(job) == set(recorded)  # no name key when none was given
    assert job["status"] == "created" and job["resumable"] is False
    assert JOB_ID.match(job["id"])
    for key in ("created_at", "upload_expires_at", "download_expires_at"):
        assert TIMESTAMP.match(job[key]), job[key]
    created = parse_timestamp(job["created_at"])
    assert parse_timestamp(job["upload_expires_at"]) - created == timedelta(seconds=900)
    assert parse_timestamp(job["download_expires_at"]) - created == timedelta(days=7)
    assert url_shape(job["upload_url"]) == url_shape(recorded["upload_url"])
    assert url_shape(job["download_url"]) == url_shape(recorded["download_url"])
    assert job["upload_url"].startswith(f"{sb.base_url}/twttr-tweet-compliance/{job['id']}/")


async def test_signed_url_query_is_encoded_like_the_recordings(
    sb: Sandbox, http: aiohttp.ClientSession
) -> None:
    job = await create_job(http, sb)
    query = dict(item.split("=", 1) for item in urlsplit(job["upload_url"]).query.split("&"))
    assert query["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
    assert re.fullmatch(
        r"complianceapi-public-svc-acct%40twttr-compliance-public-prod\.iam\.gserviceaccount"
        r"\.com%2F\d{8}%2Fauto%2Fstorage%2Fgoog4_request",
        query["X-Goog-Credential"],
    )
    created = parse_timestamp(job["created_at"])
    assert query["X-Goog-Date"] == created.strftime("%Y%m%dT%H%M%SZ")
    assert query["X-Goog-Expires"] == "900"
    assert query["X-Goog-SignedHeaders"] == "content-type%3Bhost"
    assert re.fullmatch(r"[0-9a-f]{512}", query["X-Goog-Signature"])
    download = dict(item.split("=", 1) for item in urlsplit(job["download_url"]).query.split("&"))
    assert download["X-Goog-Expires"] == "604800"
    assert download["X-Goog-SignedHeaders"] == "host"


async def test_users_job_uses_the_user_bucket(start_sandbox, http: aiohttp.ClientSession) -> None:
    sandbox = await start_sandbox(concurrency="per-type")
    job = await create_job(http, sandbox, "users")
    recorded = job_of(CREATE_USERS)
    assert set(job) == set(recorded)
    assert url_shape(job["upload_url"]) == url_shape(recorded["upload_url"])
    assert "/twttr-user-compliance/" in job["download_url"]


async def test_name_only_when_given_and_resumable_echoed(
    sb: Sandbox, http: aiohttp.ClientSession
) -> None:
    job = await create_job(http, sb, name="batch-42", resumable=True)
    assert job["name"] == "batch-42"
    assert job["resumable"] is True
    assert "content-length%3Bcontent-type%3Bhost%3Bx-goog-resumable" in job["upload_url"]
    again = await get_job(http, sb, job["id"])
    assert again == job  # URLs are not re-signed per GET


async def test_upload_window_is_configurable(start_sandbox, http: aiohttp.ClientSession) -> None:
    sandbox = await start_sandbox(upload_window_s=60, download_window_s=3600)
    job = await create_job(http, sandbox)
    created = parse_timestamp(job["created_at"])
    assert parse_timestamp(job["upload_expires_at"]) - created == timedelta(seconds=60)
    assert parse_timestamp(job["download_expires_at"]) - created == timedelta(hours=1)
    assert "X-Goog-Expires=60&" in job["upload_url"]


async def test_list_newest_first_with_result_count(
    start_sandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await start_sandbox(concurrency="per-type")
    first = await create_job(http, sandbox)
    sandbox.clock.advance(901)  # first expires unused
    second = await create_job(http, sandbox)
    await create_job(http, sandbox, "users")
    async with http.get(
        f"{sandbox.base_url}/2/compliance/jobs", params={"type": "tweets"}, headers=auth(sandbox)
    ) as response:
        assert response.status == 200
        body = await response.json()
    assert set(body) == set(LIST_2022)
    assert [job["id"] for job in body["data"]] == [second["id"], first["id"]]
    assert [job["status"] for job in body["data"]] == ["created", "expired"]
    assert body["meta"] == {"result_count": 2}
    assert set(body["data"][0]) == set(LIST_2022["data"][0])


async def test_list_status_filter_and_empty_list(
    start_sandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await start_sandbox()
    await create_job(http, sandbox)
    url = f"{sandbox.base_url}/2/compliance/jobs"
    async with http.get(
        url, params={"type": "tweets", "status": "complete"}, headers=auth(sandbox)
    ) as response:
        assert await response.json() == {}  # what twarc accepts (see x-compliance-api.md)
    async with http.get(
        url, params={"type": "tweets", "status": "created"}, headers=auth(sandbox)
    ) as response:
        assert (await response.json())["meta"] == {"result_count": 1}
    async with http.get(url, params={"type": "users"}, headers=auth(sandbox)) as response:
        assert await response.json() == {}
    sandbox.configure(empty_list_meta=True)  # the v2 convention, as an option
    async with http.get(url, params={"type": "users"}, headers=auth(sandbox)) as response:
        assert await response.json() == {"meta": {"result_count": 0}}
    sandbox.configure(include_result_count=False)  # no meta at all wins
    async with http.get(url, params={"type": "users"}, headers=auth(sandbox)) as response:
        assert await response.json() == {}


async def test_result_count_can_be_omitted_like_2021(
    start_sandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await start_sandbox(include_result_count=False)
    await create_job(http, sandbox)
    async with http.get(
        f"{sandbox.base_url}/2/compliance/jobs?type=tweets", headers=auth(sandbox)
    ) as response:
        body = await response.json()
    assert set(body) == {"data"}


# -- point 2: auth and validation -------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic c2FuZGJveA=="}],
    ids=["missing", "wrong-token", "wrong-scheme"],
)
async def test_bad_bearer_gets_401_problem(
    sb: Sandbox, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    for method, path in (("POST", ""), ("GET", "?type=tweets"), ("GET", "/1")):
        async with http.request(
            method,
            f"{sb.base_url}/2/compliance/jobs{path}",
            json={"type": "tweets"},
            headers=headers,
        ) as response:
            assert response.status == 401
            assert await response.json(content_type=None) == UNAUTHORIZED
    assert sb.jobs() == []


async def test_token_is_configurable(start_sandbox, http: aiohttp.ClientSession) -> None:
    sandbox = await start_sandbox(token="another-token")
    assert sandbox.token == "another-token"
    await create_job(http, sandbox)


async def test_list_with_wrong_param_name_matches_recorded_body(
    sb: Sandbox, http: aiohttp.ClientSession
) -> None:
    async with http.get(
        f"{sb.base_url}/2/compliance/jobs?job_type=tweets", headers=auth(sb)
    ) as response:
        assert response.status == 400
        assert await response.json(content_type=None) == LIST_BAD_PARAM


async def problem(response: aiohttp.ClientResponse) -> list[str]:
    assert response.status == 400
    body = await response.json(content_type=None)
    assert body["type"] == "https://api.twitter.com/2/problems/invalid-request"
    assert body["title"] == "Invalid Request"
    return [error["message"] for error in body["errors"]]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("type=videos", "The `type` query parameter value [videos] is not one of [tweets,users]"),
        (
            "type=tweets&status=expired",
            "The `status` query parameter value [expired] is not one of "
            "[created,in_progress,failed,complete]",
        ),
        (
            "type=tweets&limit=5",
            "The query parameter [limit] is not one of [type,status,compliance_job.fields]",
        ),
        ("", "The `type` query parameter can not be empty"),
    ],
)
async def test_list_validation(
    sb: Sandbox, http: aiohttp.ClientSession, query: str, expected: str
) -> None:
    async with http.get(f"{sb.base_url}/2/compliance/jobs?{query}", headers=auth(sb)) as response:
        assert await problem(response) == [expected]


async def test_non_numeric_job_id(sb: Sandbox, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{sb.base_url}/2/compliance/jobs/abc", headers=auth(sb)) as response:
        body = await response.json(content_type=None)
        assert response.status == 400
    assert body["errors"] == [
        {
            "parameters": {"id": ["abc"]},
            "message": "The `id` query parameter value [abc] does not match ^[0-9]{1,19}$",
        }
    ]


async def test_unknown_job_id(start_sandbox, http: aiohttp.ClientSession) -> None:
    sandbox = await start_sandbox()
    async with http.get(
        f"{sandbox.base_url}/2/compliance/jobs/123", headers=auth(sandbox)
    ) as response:
        assert response.status == 200
        body = await response.json()
    assert "data" not in body
    assert body["errors"][0]["type"] == "https://api.twitter.com/2/problems/resource-not-found"
    strict = await start_sandbox(unknown_job="404")
    async with http.get(
        f"{strict.base_url}/2/compliance/jobs/123", headers=auth(strict)
    ) as response:
        assert response.status == 404


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, "$.type: is missing but it is required"),
        ({"type": "videos"}, "$.type: does not have a value in the enumeration [tweets, users]"),
        ({"type": 5}, "$.type: integer found, string expected"),
        ({"type": "tweets", "name": "x" * 65}, "$.name: may only be 64 characters long"),
        ({"type": "tweets", "resumable": "yes"}, "$.resumable: string found, boolean expected"),
        (
            {"type": "tweets", "job_name": "old-beta"},
            "$.job_name: is not defined in the schema and the schema does not allow additional "
            "properties",
        ),
    ],
)
async def test_create_validation(
    sb: Sandbox, http: aiohttp.ClientSession, body: dict[str, object], expected: str
) -> None:
    async with http.post(
        f"{sb.base_url}/2/compliance/jobs", json=body, headers=auth(sb)
    ) as response:
        assert await problem(response) == [expected]
    assert sb.jobs() == []


async def test_create_with_malformed_json_or_unknown_query(
    sb: Sandbox, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        f"{sb.base_url}/2/compliance/jobs",
        data=b"{type: tweets",
        headers={**auth(sb), "Content-Type": "application/json"},
    ) as response:
        assert await problem(response) == ["Request body is not valid JSON"]
    async with http.post(
        f"{sb.base_url}/2/compliance/jobs?resumable=true",
        json={"type": "tweets"},
        headers=auth(sb),
    ) as response:
        assert await problem(response) == [
            "The query parameter [resumable] is not one of [compliance_job.fields]"
        ]


async def test_name_of_exactly_64_chars_is_fine(sb: Sandbox, http: aiohttp.ClientSession) -> None:
    job = await create_job(http, sb, name="n" * 64)
    assert job["name"] == "n" * 64
