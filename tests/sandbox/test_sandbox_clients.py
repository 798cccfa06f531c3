"""Acceptance: a real X client (tweepy) and the documentation's curl commands work as-is."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import requests
import tweepy
from requests.adapters import HTTPAdapter
from sandbox_helpers import parse_results, tweet_ids

from orchestrator.sandbox import Sandbox

TWEEPY_HOST = "https://api.twitter.com"  # hard-coded in tweepy.Client.request


class ToSandbox(HTTPAdapter):
    """Sends tweepy's requests to the sandbox instead of api.twitter.com (nothing else)."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        assert request.url is not None and request.url.startswith(TWEEPY_HOST)
        request.url = self.base_url + request.url[len(TWEEPY_HOST) :]
        return super().send(request, **kwargs)


def tweepy_client(sandbox: Sandbox) -> tweepy.Client:
    client = tweepy.Client(bearer_token=sandbox.token)
    client.session.trust_env = False  # no proxies from the environment: loopback only
    client.session.mount(TWEEPY_HOST, ToSandbox(sandbox.base_url))
    return client


async def test_tweepy_client_unchanged(start_sandbox) -> None:
    sandbox = await start_sandbox(concurrency="per-type")
    client = tweepy_client(sandbox)
    try:
        created = await asyncio.to_thread(
            client.create_compliance_job, type="tweets", name="tweepy", resumable=False
        )
        job = created.data
        assert job["status"] == "created" and job["name"] == "tweepy"
        users = await asyncio.to_thread(client.create_compliance_job, type="users")
        fetched = await asyncio.to_thread(client.get_compliance_job, job["id"])
        assert fetched.data == job
        listed = await asyncio.to_thread(client.get_compliance_jobs, "tweets")
        assert [item["id"] for item in listed.data] == [job["id"]]
        assert listed.meta == {"result_count": 1}
        filtered = await asyncio.to_thread(client.get_compliance_jobs, "users", status="created")
        assert [item["id"] for item in filtered.data] == [users.data["id"]]
        with pytest.raises(tweepy.errors.HTTPException) as conflict:
            await asyncio.to_thread(client.create_compliance_job, type="tweets")
        assert conflict.value.response.status_code == 409
        bad = tweepy.Client(bearer_token="wrong")
        bad.session.trust_env = False
        bad.session.mount(TWEEPY_HOST, ToSandbox(sandbox.base_url))
        with pytest.raises(tweepy.errors.Unauthorized):
            await asyncio.to_thread(bad.get_compliance_jobs, "tweets")
        bad.session.close()
    finally:
        client.session.close()


async def run(*argv: str) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_round_trip_as_documented(sb: Sandbox, tmp_path: Path) -> None:
    auth = f"Authorization: Bearer {sb.token}"
    api = f"{sb.base_url}/2/compliance/jobs"
    created = json.loads(
        await run(
            "curl",
            "-sS",
            "--noproxy",
            "*",
            "-X",
            "POST",
            api,
            "-H",
            auth,
            "-H",
            "Content-Type: application/json",
            "-d",
            '{"type": "tweets", "name": "curl"}',
        )
    )["data"]
    ids = tweet_ids(500)
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    # Exactly the documentation's upload command.
    status = await run(
        "curl",
        "-sS",
        "--noproxy",
        "*",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "PUT",
        "-H",
        "Content-Type: text/plain",
        "--data-binary",
        f"@{tmp_path / 'ids.txt'}",
        created["upload_url"],
    )
    assert status == "200"
    polled = json.loads(
        await run("curl", "-sS", "--noproxy", "*", f"{api}/{created['id']}", "-H", auth)
    )["data"]
    assert polled["status"] == "complete"
    results = tmp_path / "results.json"
    await run("curl", "-sS", "--noproxy", "*", "-o", str(results), polled["download_url"])
    rows = parse_results(results.read_bytes())
    assert {row["id"]: row for row in rows} == sb.expected_results("tweets", ids)
    assert rows  # 10 % of 500
