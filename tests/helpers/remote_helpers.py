"""Helpers for the remote adapter tests (tests/remote/): ID files, result files, jobs that
have completed, progress recording, and the check that no secret reached a text."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import aiohttp
import yarl

from orchestrator.core.model import JobType, RemoteJob, RemoteStatus
from orchestrator.remote.upload import upload_simple
from orchestrator.remote.xapi import XApi

TOKEN = "remote-test-token-93ad0c5f2c"


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
