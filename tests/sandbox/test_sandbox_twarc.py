"""Acceptance (issue 10): twarc's real `twarc2 compliance-job` commands work against the
sandbox on 127.0.0.1, with no jobs and with jobs, and nothing touches the network.

twarc runs in a child process through `twarc_loopback.py` (its api.twitter.com URLs sent to
the sandbox, every non-loopback lookup or connection refused and reported), with a private
HOME (no twarc config) and proxies pointing at a closed loopback port.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from sandbox_helpers import parse_results, tweet_ids

from orchestrator.sandbox import Sandbox

pytest.importorskip("twarc", reason="twarc is in the test extra")

WRAPPER = Path(__file__).with_name("twarc_loopback.py")
NETWORK_MARK = "twarc_loopback: refused a non-loopback"


async def twarc2(sandbox_url: str, token: str, cwd: Path, *args: str) -> tuple[str, str]:
    """Run `twarc2 ARGS` against `sandbox_url`; (stdout, stderr). Fails on a network try."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(cwd),  # no ~/.config/twarc: only what we pass
        "BEARER_TOKEN": token,
        # Should anything bypass the socket guard via a proxy, it finds a closed port.
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
        "PYTHONWARNINGS": "ignore",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(WRAPPER), sandbox_url, *args,
        cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    stdout, stderr = out.decode(), err.decode()
    assert NETWORK_MARK not in stderr, stderr
    assert process.returncode == 0, stderr
    return stdout, stderr


async def test_twarc2_lists_no_jobs(start_sandbox, tmp_path: Path) -> None:
    sb = await start_sandbox()
    stdout, stderr = await twarc2(sb.base_url, sb.token, tmp_path, "compliance-job", "list")
    assert "There are no tweet or user compliance jobs" in stderr, stderr
    assert "Unknown response" not in stderr
    stdout, _ = await twarc2(sb.base_url, sb.token, tmp_path,
                             "compliance-job", "list", "users", "--json-output")
    assert json.loads(stdout) == []


async def test_twarc2_creates_lists_and_downloads_a_job(
    start_sandbox, tmp_path: Path
) -> None:
    sb: Sandbox = await start_sandbox()
    ids = tweet_ids(300)
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    _, stderr = await twarc2(sb.base_url, sb.token, tmp_path, "compliance-job", "create",
                             "tweets", "ids.txt", "--job-name", "twarc", "--no-wait")
    [job] = sb.jobs()
    assert f"Created a new tweets job {job['id']}" in stderr
    assert job["name"] == "twarc" and job["uploaded_ids"] == len(ids)

    # Both types: the users list is empty, and must not break the listing.
    _, stderr = await twarc2(sb.base_url, sb.token, tmp_path, "compliance-job", "list")
    assert f'ID: "{job["id"]}" Name: "twarc" Status: "complete"' in stderr, stderr
    stdout, _ = await twarc2(sb.base_url, sb.token, tmp_path,
                             "compliance-job", "list", "tweets", "--json-output")
    assert [item["id"] for item in json.loads(stdout)] == [job["id"]]

    await twarc2(sb.base_url, sb.token, tmp_path, "compliance-job", "download", job["id"],
                 "results.json", "--hide-progress")
    rows = parse_results((tmp_path / "results.json").read_bytes())
    assert {row["id"]: row for row in rows} == sb.expected_results("tweets", ids)
    assert len(rows) == len(sb.expected_results("tweets", ids))


async def test_the_wrapper_refuses_the_network(tmp_path: Path) -> None:
    """The guard bites: a base URL off loopback (TEST-NET-1, never routed) is refused before
    any packet leaves, and reported."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(WRAPPER), "http://192.0.2.1:9", "compliance-job", "list",
        cwd=tmp_path, env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
                           "BEARER_TOKEN": "t"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert NETWORK_MARK in err.decode()
    assert "192.0.2.1" in err.decode()
