"""/healthz and /metrics on the loopback listener, and the numbers and lines behind them:
transfer byte counters, progress lines at a bounded rate, the canonical job.finished line,
the results-expiry warning."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import structlog
from clocks import FakeClock
from daemon_helpers import TOKEN, drained, drop, load, make_ids, outcome, running_service, wait_for
from daemon_helpers import write_config as write_test_config
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.config import Config
from orchestrator.core.model import Batch, BatchState, JobType
from orchestrator.daemon.activity import Activity
from orchestrator.daemon.metrics import Metrics
from orchestrator.daemon.service import Service
from orchestrator.sandbox import Sandbox

MIB = 1024 * 1024


def health_config(tmp_path: Path, base_url: str) -> Config:
    path = write_test_config(tmp_path, base_url)
    path.write_text(path.read_text() + '\n[health]\nenabled = true\nhost = "127.0.0.1"\nport = 0\n')
    return load(path)


async def get(service: Service, page: str) -> tuple[int, str, str]:
    assert service.health_port is not None
    url = f"http://127.0.0.1:{service.health_port}/{page}"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, resp.headers["Content-Type"], await resp.text()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(found: dict[Any, float], name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


# ---- the listener -------------------------------------------------------------------------


async def test_healthz_and_metrics_after_a_job(tmp_path: Path, sandbox: Sandbox) -> None:
    config = health_config(tmp_path, sandbox.base_url)
    ids = make_ids(3, 200)
    with structlog.testing.capture_logs() as logs:
        async with running_service(config) as service:
            status, _, body = await get(service, "healthz")
            assert status == 200 and '"status": "ok"' in body
            drop(tmp_path, "tweets", "ids.txt", ids)
            await drained(service)  # the batch is done, not only its outbox files written
            assert outcome(tmp_path, "tweets", "ids.txt") == "delivered"
            # The queue gauge is refreshed after transitions, at most about once a second.
            with anyio.fail_after(10):
                while True:
                    status, content_type, text = await get(service, "metrics")
                    now_seen = samples(text)
                    # The job counter follows the batch's cleanup, a moment after it is done.
                    queued = value(now_seen, "compliance_orchestrator_queue_length",
                                   job_type="tweets")
                    done = value(now_seen, "compliance_orchestrator_batches_finished_total",
                                 job_type="tweets", outcome="done")
                    if queued == 0 and done == 1:
                        break
                    await anyio.sleep(0.1)
    assert status == 200 and content_type.startswith("text/plain")
    found = samples(text)
    assert value(found, "compliance_orchestrator_batches_finished_total", job_type="tweets",
                 outcome="done") == 1
    assert value(found, "compliance_orchestrator_batches_finished_total", job_type="users",
                 outcome="failed") == 0
    assert value(found, "compliance_orchestrator_api_requests_total", endpoint="create",
                 status="200") == 1
    assert (value(found, "compliance_orchestrator_api_requests_total", endpoint="get", status="200")
            or 0) >= 1
    upload_body = sum(len(i) + 1 for i in ids)
    assert value(found, "compliance_orchestrator_transfer_bytes_total",
                 direction="upload") == upload_body
    assert (value(found, "compliance_orchestrator_transfer_bytes_total",
                  direction="download") or 0) > 0
    assert value(found, "compliance_orchestrator_queue_length", job_type="tweets") == 0
    remaining = value(found, "compliance_orchestrator_rate_limit_remaining", endpoint="create")
    assert remaining is not None and 0 <= remaining < 150
    for stage in ("creating", "uploading", "waiting", "downloading", "delivering"):
        assert value(found, "compliance_orchestrator_stage_duration_seconds_count",
                     stage=stage) == 1
    assert (value(found, "compliance_orchestrator_heartbeat_age_seconds") or 0) < 60
    # The canonical line: one per batch, with the totals.
    finished = [e for e in logs if e["event"] == "job.finished"]
    assert len(finished) == 1
    line = finished[0]
    assert line["outcome"] == "done" and line["inputs"] == 1 and line["ids"] == 200
    assert line["attempts"] == 1 and line["x_job_id"] and line["duration_ms"] >= 0
    assert line["affected"] == len(sandbox.expected_results("tweets", ids))


async def test_the_deadline_of_the_job_in_hand_is_exported(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    sandbox.config.processing_time_s = 30.0  # the job stays in hand while we look
    config = health_config(tmp_path, sandbox.base_url)
    async with running_service(config) as service:
        drop(tmp_path, "users", "slow.txt", make_ids(4, 20))
        runner = service.runner
        assert runner is not None
        await wait_for(lambda: any(b.state is BatchState.WAITING
                                   for b in runner.current.values()), what="waiting")
        _, _, text = await get(service, "metrics")
        service.stop()
        service.stop()  # do not wait for the poll in flight
    at = value(samples(text), "compliance_orchestrator_job_deadline_timestamp_seconds",
               job_type="users", deadline="download")
    assert at is not None
    left = at - time.time()
    assert 6 * 86400 < left <= 7 * 86400  # results live 7 days


async def test_healthz_is_503_with_a_reason_when_the_heartbeat_is_stale(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config = health_config(tmp_path, sandbox.base_url)
    async with running_service(config) as service:
        service.stale_after_s = -1.0  # any heartbeat is now too old: as if a lane hung
        status, _, body = await get(service, "healthz")
    assert status == 503
    assert '"status": "unhealthy"' in body and "heartbeat" in body


async def test_healthz_is_503_while_the_api_refuses_the_token(
    tmp_path: Path, make_sandbox: Callable[..., Sandbox]
) -> None:
    async with make_sandbox(seed=0) as wrong:
        config = health_config(tmp_path, wrong.base_url)
        async with running_service(config) as service:
            # Refused from after READY: a token refused at start-up ends the start instead.
            wrong.config.token = "another-token"
            drop(tmp_path, "tweets", "ids.txt", make_ids(5, 10))
            runner = service.runner
            assert runner is not None
            await wait_for(lambda: runner.auth_paused, what="auth pause")
            status, _, body = await get(service, "healthz")
            service.stop()
            service.stop()
    assert status == 503 and "credentials" in body


async def test_no_listener_unless_enabled(tmp_path: Path, sandbox: Sandbox) -> None:
    config = load(write_test_config(tmp_path, sandbox.base_url))
    assert config.health.enabled is False
    async with running_service(config, TOKEN) as service:
        assert service.health_port is None


# ---- transfer accounting and progress lines (fake clock) ------------------------------------


def _uploading(clock: FakeClock) -> tuple[Activity, Metrics, Batch]:
    metrics = Metrics()
    activity = Activity(1, metrics, clock=clock)
    batch = Batch(id=1, key="k", job_type=JobType.TWEETS, state=BatchState.UPLOADING,
                  x_job_id="1446")
    activity.hold(0, batch)
    return activity, metrics, batch


def _bytes(metrics: Metrics, direction: str) -> float:
    return metrics.transfer_bytes.labels(direction)._value.get()


def test_progress_lines_come_each_10_percent_at_most_every_5_s() -> None:
    clock = FakeClock()
    activity, metrics, batch = _uploading(clock)
    meter = activity.meter(batch, "upload", baseline=0, resumed_bytes_count=False)
    total = 1000 * MIB
    with structlog.testing.capture_logs() as logs:
        for mib in range(1, 1001):  # 1000 callbacks over 100 s
            clock.advance(0.1)
            meter(mib * MIB, total)
    lines = [e for e in logs if e["event"] == "upload.progress"]
    assert [line["percent"] // 10 for line in lines] == list(range(1, 10))
    for line in lines:
        assert line["total_bytes"] == total and line["x_job_id"] == "1446"
        assert line["percent"] == round(line["bytes"] * 100 / total, 1)
        assert abs(line["rate_bytes_s"] - 10 * MIB) <= 1024  # 1 MiB per 0.1 s
    assert _bytes(metrics, "upload") == total


def test_a_fast_transfer_logs_little_and_a_slow_one_once_a_minute() -> None:
    clock = FakeClock()
    activity, _, batch = _uploading(clock)
    fast = activity.meter(batch, "upload", baseline=0, resumed_bytes_count=False)
    with structlog.testing.capture_logs() as logs:
        for mib in range(1, 101):  # 100 MiB in 2 s
            clock.advance(0.02)
            fast(mib * MIB, 100 * MIB)
        slow = activity.meter(batch, "download", baseline=0, resumed_bytes_count=True)
        for n in range(1, 601):  # 1 KiB a second for 10 minutes, size unknown
            clock.advance(1)
            slow(n * 1024, -1)
    assert not [e for e in logs if e["event"] == "upload.progress"]
    lines = [e for e in logs if e["event"] == "download.progress"]
    assert len(lines) == 10 and lines[0]["percent"] is None and lines[0]["bytes"] == 60 * 1024


def test_resumed_transfers_count_only_the_bytes_that_moved() -> None:
    clock = FakeClock()
    activity, metrics, batch = _uploading(clock)
    # Resumable upload: the storage already holds 6 MiB; it then loses 1 MiB of a chunk.
    meter = activity.meter(batch, "upload", baseline=None, resumed_bytes_count=False)
    for done in (6, 7, 8, 7, 8, 9, 10):
        meter(done * MIB, 10 * MIB)
    assert _bytes(metrics, "upload") == 5 * MIB
    # Download resumed from 4 MiB on disk, then restarted from zero by the server.
    meter = activity.meter(batch, "download", baseline=4 * MIB, resumed_bytes_count=True)
    for done in (5, 6, 1, 2, 3):
        meter(done * MIB, 3 * MIB)
    assert _bytes(metrics, "download") == 5 * MIB


def test_results_expiry_warning_once_per_job() -> None:
    clock = FakeClock()
    activity = Activity(1, Metrics(), clock=clock,
                        download_warn_lead_s=3600)
    batch = Batch(id=5, key="k", job_type=JobType.USERS, state=BatchState.WAITING,
                  x_job_id="77", download_expires_at=clock.now() + timedelta(hours=2))
    with structlog.testing.capture_logs() as logs:
        activity.warn_if_results_expire_soon(batch)  # 2 h left: fine
        clock.advance(5400)  # 30 min left
        activity.warn_if_results_expire_soon(batch)
        clock.advance(60)
        activity.warn_if_results_expire_soon(batch)
    warnings = [e for e in logs if e["event"] == "job.download_deadline_near"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning" and warnings[0]["x_job_id"] == "77"
    assert 0 < warnings[0]["remaining_s"] < 3600
