"""/healthz turns 503, with the reason, once X has been unreachable or the outbox unwritable
for longer than health.unhealthy_after_s, and 200 again after recovery (issue 10, item 14).
Through the real listener on 127.0.0.1, with sandbox faults and a real outbox failure."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import anyio
from daemon_helpers import drop, load, make_ids, outcome, running_service, wait_for, write_config

from orchestrator.config import Config
from orchestrator.daemon.service import Service
from orchestrator.sandbox import Sandbox

THRESHOLD_S = 1.0


def config_for(tmp_path: Path, base_url: str) -> Config:
    # Stage retries out of the way: this is about health, not about when to give up.
    path = write_config(tmp_path, base_url, max_stage_retries=100_000)
    path.write_text(path.read_text() + "\n[health]\nenabled = true\nhost = \"127.0.0.1\"\n"
                    f"port = 0\nunhealthy_after_s = {THRESHOLD_S}\n")
    return load(path)


async def healthz(service: Service) -> tuple[int, dict[str, Any]]:
    assert service.health_port is not None
    url = f"http://127.0.0.1:{service.health_port}/healthz"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, json.loads(await resp.text())


async def wait_for_status(service: Service, wanted: int, timeout: float = 30) -> dict[str, Any]:
    with anyio.fail_after(timeout):
        while True:
            status, body = await healthz(service)
            if status == wanted:
                return body
            await anyio.sleep(0.05)


async def test_x_unreachable_for_too_long_is_503_then_200_after_recovery(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    async with running_service(config_for(tmp_path, sandbox.base_url)) as service:
        assert (await healthz(service))[0] == 200
        sandbox.faults.add("create", "503", count=100_000)
        drop(tmp_path, "tweets", "a.txt", make_ids(5, 30))
        # A first failure is not yet an outage.
        await wait_for(lambda: service.runner is not None and bool(
            service.runner.activity.incidents.conditions()), what="a first failure")
        status, body = await healthz(service)
        assert status == 200 and "x_unreachable" in body["conditions"]

        body = await wait_for_status(service, 503)
        assert body["status"] == "unhealthy"
        assert "X API" in body["reason"] and "unreachable" in body["reason"]
        assert "last: RetryableError: X API create: HTTP 503" in body["reason"]
        condition = body["conditions"]["x_unreachable"]
        assert condition["for_s"] >= THRESHOLD_S and condition["failures"] >= 2
        assert condition["last_error"] == "RetryableError" and condition["last_error_msg"]

        sandbox.faults.clear()
        body = await wait_for_status(service, 200)
        assert body["status"] == "ok" and "conditions" not in body
        await wait_for(lambda: outcome(tmp_path, "tweets", "a.txt") == "delivered",
                       what="delivery after the outage")


async def test_outbox_unwritable_for_too_long_is_503_then_200(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    async with running_service(config_for(tmp_path, sandbox.base_url)) as service:
        folder = tmp_path / "outbox" / "tweets"
        shutil.rmtree(folder)
        folder.write_text("not a folder")  # root ignores modes: a file in the way fails for all
        drop(tmp_path, "tweets", "b.txt", make_ids(6, 30))

        body = await wait_for_status(service, 503)
        assert "outbox" in body["reason"] and "unwritable" in body["reason"]
        condition = body["conditions"]["outbox_unwritable"]
        assert condition["failures"] >= 2 and condition["last_error"] in (
            "FileExistsError", "NotADirectoryError")

        folder.unlink()
        folder.mkdir()
        await wait_for(lambda: outcome(tmp_path, "tweets", "b.txt") == "delivered",
                       what="delivery once the outbox is back")
        body = await wait_for_status(service, 200)
        assert "conditions" not in body
