"""Helpers shared by the sandbox tests (tests/sandbox/); importable as `sandbox_helpers`."""

from __future__ import annotations

import io
import json
from typing import Any

import aiohttp
from yarl import URL

from orchestrator.sandbox import Sandbox


def signed(url: str) -> URL:
    """Signed URLs must travel byte for byte (yarl would re-encode %40 / %2F otherwise)."""
    return URL(url, encoded=True)


def auth(sandbox: Sandbox) -> dict[str, str]:
    return {"Authorization": f"Bearer {sandbox.token}"}


async def create_job(
    http: aiohttp.ClientSession, sandbox: Sandbox, job_type: str = "tweets", **body: Any
) -> dict[str, Any]:
    async with http.post(
        f"{sandbox.base_url}/2/compliance/jobs",
        json={"type": job_type, **body},
        headers=auth(sandbox),
    ) as response:
        assert response.status == 200, await response.text()
        data: dict[str, Any] = (await response.json())["data"]
        return data


async def get_job(http: aiohttp.ClientSession, sandbox: Sandbox, job_id: str) -> dict[str, Any]:
    async with http.get(
        f"{sandbox.base_url}/2/compliance/jobs/{job_id}", headers=auth(sandbox)
    ) as response:
        assert response.status == 200, await response.text()
        data: dict[str, Any] = (await response.json())["data"]
        return data


async def upload(http: aiohttp.ClientSession, job: dict[str, Any], body: bytes) -> int:
    data = io.BytesIO(body) if len(body) > 1 << 20 else body  # aiohttp warns on big bytes
    async with http.put(
        signed(job["upload_url"]), data=data, headers={"Content-Type": "text/plain"}
    ) as response:
        assert response.status == 200, await response.text()
        return response.status


async def download(http: aiohttp.ClientSession, job: dict[str, Any]) -> bytes:
    async with http.get(signed(job["download_url"])) as response:
        assert response.status == 200, await response.text()
        return await response.read()


def ids_body(ids: list[str], newline: bytes = b"\n", final_newline: bool = True) -> bytes:
    body = newline.join(ident.encode() for ident in ids)
    return body + newline if final_newline else body


def tweet_ids(count: int, start: int = 1446017776678801409, step: int = 7919) -> list[str]:
    return [str(start + index * step) for index in range(count)]


def parse_results(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in raw.split(b"\n") if line.strip()]
