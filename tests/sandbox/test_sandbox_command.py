"""The CLI (`compliance-orchestrator sandbox`) and the HTTP controls under /_sandbox."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import aiohttp
import pytest
from sandbox_helpers import auth, create_job, ids_body, signed, tweet_ids, upload

from orchestrator.cli.main import build_parser
from orchestrator.sandbox import Sandbox
from orchestrator.sandbox.command import config_from_args, configure_parser
from orchestrator.sandbox.remote import SandboxProcess, SandboxRemote


def test_help_documents_every_option() -> None:
    parser = argparse.ArgumentParser(prog="sandbox")
    configure_parser(parser)
    for action in parser._actions:
        assert action.help, f"{action.dest} has no help"
    text = parser.format_help()
    for option in ("--fault", "--concurrency", "--upload-window", "--clock-offset", "--seed"):
        assert option in text


def test_options_become_the_config() -> None:
    args = build_parser().parse_args(
        [
            "sandbox",
            "--concurrency",
            "per-type",
            "--upload-window",
            "30",
            "--no-shuffle",
            "--affected-fraction",
            "0.5",
            "--fault",
            "upload:500:3",
            "--fault",
            "get:slow:1:2",
        ]
    )
    config = config_from_args(args)
    assert config.concurrency == "per-type"
    assert config.upload_window_s == 30
    assert config.shuffle is False and config.blank_lines is True
    assert config.affected_fraction == 0.5
    assert args.fault == [
        {"endpoint": "upload", "kind": "500", "count": 3},
        {"endpoint": "get", "kind": "slow", "count": 1, "delay": 2.0},
    ]


@pytest.mark.parametrize("argv", [["--fault", "upload:418"], ["--affected-fraction", "2"]])
def test_bad_options_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["sandbox", *argv])
    assert exit_info.value.code == 2


async def test_cli_process_serves_faults_controls_and_stops_cleanly(tmp_path: Path) -> None:
    log = tmp_path / "sandbox.log"
    process = SandboxProcess(
        [
            "--processing-time",
            "0",
            "--fault",
            "create:503:1",
            "--fail-next-jobs",
            "1",
            "--fail-error",
            "Scripted",
        ],
        log_file=log,
    )
    await asyncio.to_thread(process.start)
    try:
        assert process.ready["event"] == "sandbox.ready"
        assert process.token == "sandbox-token"
        headers = {"Authorization": f"Bearer {process.token}"}
        url = f"{process.base_url}/2/compliance/jobs"
        async with aiohttp.ClientSession() as http:
            async with http.post(url, json={"type": "tweets"}, headers=headers) as response:
                assert response.status == 503  # --fault create:503:1
            async with http.post(url, json={"type": "tweets"}, headers=headers) as response:
                job = (await response.json())["data"]
            async with http.put(
                signed(job["upload_url"]),
                data=b"1446017776678801409\n",
                headers={"Content-Type": "text/plain"},
            ) as response:
                assert response.status == 200
        remote = process.remote
        jobs = await asyncio.to_thread(remote.jobs)
        assert [(j["id"], j["status"], j["error"]) for j in jobs] == [
            (job["id"], "failed", "Scripted")
        ]
        before = await asyncio.to_thread(remote.now)
        after = await asyncio.to_thread(remote.advance, 86400)
        assert after > before
        requests = await asyncio.to_thread(remote.requests)
        assert [status for _, _, status in requests] == [503, 200, 200]
    finally:
        code = await asyncio.to_thread(process.stop)
    assert code == 0
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    events = [line for line in lines if line["event"] == "sandbox.request"]
    api = [(e["method"], e["status"]) for e in events if e["endpoint"] is not None]
    assert api == [("POST", 503), ("POST", 200), ("PUT", 200)]
    assert {e["path"] for e in events} >= {"/_sandbox/jobs", "/_sandbox/clock"}  # logged too
    assert "X-Goog" not in log.read_text()


async def test_cli_refuses_bad_config() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator",
        "sandbox",
        "--rate-limit",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 2
    assert b"rate_limit" in stderr


async def test_http_controls(sb: Sandbox, http: aiohttp.ClientSession) -> None:
    remote = SandboxRemote(sb.base_url)
    assert await asyncio.to_thread(remote.health)
    await asyncio.to_thread(remote.add_fault, "list", "500", 2)
    assert [f["kind"] for f in await asyncio.to_thread(remote.faults)] == ["500"]
    await asyncio.to_thread(remote.clear_faults)
    assert await asyncio.to_thread(remote.faults) == []
    config = await asyncio.to_thread(remote.configure, upload_window_s=30)
    assert config["upload_window_s"] == 30 and "signing_key" not in config
    job = await create_job(http, sb)
    assert "X-Goog-Expires=30&" in job["upload_url"]
    ids = tweet_ids(300)
    await upload(http, job, ids_body(ids))
    expected = sb.expected_results("tweets", ids)
    assert await asyncio.to_thread(remote.expected_results, "tweets", ids) == expected
    rows = await asyncio.to_thread(remote.job_expected_rows, job["id"])
    assert {row["id"]: row for row in rows} == expected
    assert await asyncio.to_thread(remote.jobs) == sb.jobs()
    async with http.post(f"{sb.base_url}/_sandbox/config", json={"seed": 5}) as response:
        assert response.status == 400  # not tunable at run time
    async with http.post(
        f"{sb.base_url}/_sandbox/faults", json={"spec": "create:429:1:7"}
    ) as response:
        assert response.status == 200
    async with http.post(
        f"{sb.base_url}/2/compliance/jobs", json={"type": "users"}, headers=auth(sb)
    ) as response:
        assert response.status == 429
    # The controls are not part of the API's request log.
    assert all(not path.startswith("/_sandbox") for _, path, _ in sb.request_log)


def test_sandbox_thread_for_synchronous_callers() -> None:
    import requests

    from orchestrator.sandbox import SandboxConfig, SandboxThread

    with SandboxThread(SandboxConfig(processing_time_s=0)) as sb, requests.Session() as http:
        http.trust_env = False
        sb.faults.fail_next_jobs(1, error="early")
        response = http.post(
            f"{sb.base_url}/2/compliance/jobs",
            json={"type": "users"},
            headers={"Authorization": f"Bearer {sb.token}"},
        )
        assert response.status_code == 200
        job = response.json()["data"]
        sb.clock.advance(900)
        assert [(j["id"], j["status"]) for j in sb.jobs()] == [(job["id"], "expired")]
        assert sb.request_log == [("POST", "/2/compliance/jobs", 200)]
        assert sb.jobs()[0]["sandbox_error"] == "early"


async def test_faults_can_be_scripted_before_start(http: aiohttp.ClientSession) -> None:
    from orchestrator.sandbox import SandboxConfig

    sandbox = Sandbox(SandboxConfig(processing_time_s=0))
    sandbox.faults.add("create", "500")
    sandbox.faults.fail_next_jobs(1, error="before start")
    async with sandbox:
        async with http.post(
            f"{sandbox.base_url}/2/compliance/jobs", json={"type": "tweets"}, headers=auth(sandbox)
        ) as response:
            assert response.status == 500
        job = await create_job(http, sandbox)
        await upload(http, job, ids_body(tweet_ids(1)))
        assert sandbox.jobs()[0]["error"] == "before start"
