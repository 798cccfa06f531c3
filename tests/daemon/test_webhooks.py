"""Webhooks end to end: the daemon POSTs to a real receiver on 127.0.0.1 that verifies the
signature; 5xx and timeouts are retried, 4xx fails for good and shows in `status`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from admin_helpers import arun_cli, run_cli
from daemon_helpers import db_rows, drop, load, make_ids, running_service, wait_for, write_config
from hook_helpers import add_entries, receiver

from orchestrator.core.hooks import verify
from orchestrator.sandbox import Sandbox

SECRET = b"whsec-test-0123456789abcdef"


def _final(workdir: Path) -> bool:
    runs = db_rows(workdir, "SELECT state FROM hook_runs")
    return bool(runs) and all(r["state"] in ("done", "failed") for r in runs)


def _config(tmp_path: Path, sandbox: Sandbox, url: str, **extra: object) -> Path:
    (tmp_path / "webhook.secret").write_bytes(SECRET + b"\n")
    entry = {"url": url, "on": "delivered", "secret_file": "webhook.secret",
             "backoff_initial_s": 0.1, "backoff_max_s": 0.2, **extra}
    return add_entries(write_config(tmp_path, sandbox.base_url), "webhooks", entry)


async def test_a_signed_webhook_is_verified_by_the_receiver_and_retried_after_5xx(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    async with receiver(503, 500) as got:
        config = load(_config(tmp_path, sandbox, got.url, max_attempts=4))
        async with running_service(config):
            drop(tmp_path, "tweets", "w.txt", make_ids(9, 30))
            await wait_for(lambda: _final(tmp_path), what="the webhook run")
    [run] = db_rows(tmp_path, "SELECT * FROM hook_runs")
    assert run["state"] == "done" and run["attempts"] == 3
    assert len(got.received) == 3
    for headers, body in got.received:
        assert verify(SECRET, headers["X-Compliance-Signature"], body, int(time.time()))
        assert not verify(b"wrong", headers["X-Compliance-Signature"], body, int(time.time()))
        assert headers["X-Compliance-Event"] == "delivered"
        assert headers["X-Compliance-Idempotency-Key"] == run["idempotency_key"]
        assert SECRET.decode() not in json.dumps(headers)
    document = json.loads(got.received[-1][1])
    assert document["event"] == "delivered" and document["input"] == "w.txt"
    assert document["document"]["counts"]["submitted"] == 30  # the manifest itself
    assert Path(document["paths"]["results"]).name == "w.jsonl"
    assert SECRET.decode() not in (tmp_path / "state").joinpath("state.db").read_bytes().decode(
        "latin-1")


async def test_a_4xx_fails_at_once_and_shows_in_status(
    tmp_path: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    async with receiver(400) as got:
        config_path = _config(tmp_path, sandbox, got.url, max_attempts=5)
        async with running_service(load(config_path)):
            drop(tmp_path, "users", "x.txt", make_ids(10, 5))
            await wait_for(lambda: _final(tmp_path), what="the webhook run")
    [run] = db_rows(tmp_path, "SELECT * FROM hook_runs")
    assert run["state"] == "failed" and run["attempts"] == 1 and "HTTP 400" in run["last_error"]
    assert len(got.received) == 1
    result = run_cli(capsys, "status", "--json", "--config", str(config_path))
    assert result.code == 0
    report = json.loads(result.out)
    assert report["hooks"]["counts"]["failed"] == 1
    assert report["hooks"]["failed"][0]["target"] == "webhooks[0]"
    text = run_cli(capsys, "status", "--config", str(config_path)).out
    assert "webhooks[0]" in text and "retry-hooks" in text
    jobs = json.loads(run_cli(capsys, "jobs", "--json", "--config", str(config_path)).out)
    assert jobs["jobs"][0]["hook_runs"] == {"failed": 1}
    assert "hook runs: 1 failed" in run_cli(capsys, "jobs", "--config", str(config_path)).out
    assert (await arun_cli(capsys, "retry-hooks", "999", "--config", str(config_path))).code == 1
    again = await arun_cli(capsys, "retry-hooks", "--json", "--config", str(config_path))
    assert again.code == 0 and json.loads(again.out)["retried"] == [run["id"]]
    none_left = await arun_cli(capsys, "retry-hooks", "--config", str(config_path))
    assert none_left.code == 1
    async with receiver() as fixed:  # the receiver is fixed (and moved): 200 this time
        text = config_path.read_text().replace(got.url, fixed.url)
        config_path.write_text(text)
        async with running_service(load(config_path)):
            await wait_for(lambda: _final(tmp_path), what="the retried webhook run")
    [run] = db_rows(tmp_path, "SELECT * FROM hook_runs")
    assert run["state"] == "done" and run["attempts"] == 1 and len(fixed.received) == 1


async def test_a_webhook_that_does_not_answer_in_time_is_retried_then_failed(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    async with receiver() as got:
        config = load(_config(tmp_path, sandbox, got.url.replace("/hook", "/slow"),
                              max_attempts=2, timeout_s=0.5))
        async with running_service(config):
            drop(tmp_path, "tweets", "m.txt", make_ids(11, 5))
            await wait_for(lambda: _final(tmp_path), what="the webhook run")
    [run] = db_rows(tmp_path, "SELECT * FROM hook_runs")
    assert run["state"] == "failed" and run["attempts"] == 2
    assert "no answer within 0.5 s" in run["last_error"]
    assert len(got.received) == 2
