"""Issue 10: hours- and days-long faults, time-warped so that they run in seconds.

The daemon runs in this process on `SandboxTime(sandbox.clock, warp=True)`: it reads the
sandbox's ("X's") clock, and each time it waits for time to pass (a retry's backoff, the next
poll, a rate-limit reset) it moves that clock forward instead of sleeping. X's side (job
processing, upload window, expiry, signed URLs, rate windows, and the scripted outage itself)
runs on the same clock, so 24 h of X's time pass in a few seconds of real time, with the
production backoff (2 s doubling to a 300 s cap) and poll settings.

| fault (Faults.outage, sandbox clock)      | stage     | outcome (asserted)                      |
|-------------------------------------------|-----------|-----------------------------------------|
| 24 h: every API and storage request fails | creating  | retried until it ends; 1 job, exact     |
| with 503 or a reset, from the first       |           | results, nothing rejected, one incident |
| request to the stage's endpoint           |           | error line                              |
|                                           | uploading | the window closes: 1 new job (not       |
|                                           |           | counted), no 409 from the old one, then |
|                                           |           | exact results, nothing rejected         |
|                                           | waiting   | polled on until it ends; 1 job          |
|                                           | downloading | downloaded when it ends; 1 job        |
| 6-day partition (every request reset)     | waiting,  | resumed before download_expires_at (7   |
|                                           | downloading | days): 1 job, no resubmission         |

Each test also measures itself: X's clock moved >= the outage, real time stayed < 60 s.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from clocks import SandboxTime
from daemon_helpers import (
    TOKEN,
    drop,
    load,
    make_ids,
    outcome,
    read_results,
    running_service,
    wait_for,
)
from resilience_helpers import LogTap, settled, statuses, tap_logs, write_config_ex

from orchestrator.sandbox import Sandbox, SandboxConfig

DAY = 86400.0
REAL_BUDGET_S = 60.0  # generous for a loaded CI machine; they take a few seconds each

# The production retry and poll settings, not the test suite's fast ones.
PRODUCTION_TIMING = {
    "jobs": {"backoff_initial_s": 2.0, "backoff_max_s": 300.0, "upload_margin_s": 60.0,
             "download_margin_s": 3600.0, "max_stage_retries": 10, "max_attempts": 5},
    "poll": {"initial_interval_s": 5.0, "max_interval_s": 60.0, "backoff_factor": 1.5},
}


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    # Ten minutes of processing, the real 15-minute upload window and 7-day results.
    config = SandboxConfig(token=TOKEN, processing_time_s=600, seed=23)
    async with Sandbox(config) as sb:
        yield sb


@pytest.fixture
def logs() -> Iterator[LogTap]:
    with tap_logs() as tap:
        yield tap


def nothing_rejected(workdir: Path) -> bool:
    folder = workdir / "outbox" / "rejected"
    return not folder.exists() or not any(folder.iterdir())


async def deliver_through(
    tmp_path: Path, sb: Sandbox, logs: LogTap, *, outage_s: float, kinds: tuple[str, ...],
    starts_with: str, ids: list[str],
) -> SandboxTime:
    """Drop one file, script the outage, run the daemon on the warped clock to delivery."""
    config = load(write_config_ex(tmp_path, sb.base_url, extra=PRODUCTION_TIMING))
    clock = SandboxTime(sb.clock, warp=True)
    sb.faults.outage(outage_s, kinds, starts_with=starts_with)
    began_x, began_real = sb.clock.now(), time.monotonic()
    async with running_service(config, clock=clock):
        drop(tmp_path, "tweets", "ids.txt", ids)
        await wait_for(lambda: settled(tmp_path, "tweets", "ids.txt"),
                       timeout=REAL_BUDGET_S, what="delivery after the outage")
    real_s = time.monotonic() - began_real
    x_s = (sb.clock.now() - began_x).total_seconds()
    print(f"{starts_with}: {x_s / 3600:.1f} h of X's time in {real_s:.1f} s")
    assert x_s >= outage_s and real_s < REAL_BUDGET_S
    assert sb.faults.pending() == []  # the outage ended by itself
    # The outage really covered the stage: it began there and failed for its whole length
    # (at least one try per backoff cap).
    assert statuses(sb, starts_with)[0] in (0, 503)
    failed = [s for _m, _p, s in sb.request_log if s in (0, 503)]
    assert len(failed) >= outage_s / 300, len(failed)
    return clock


def assert_delivered_once(tmp_path: Path, sb: Sandbox, ids: list[str]) -> None:
    assert outcome(tmp_path, "tweets", "ids.txt") == "delivered"
    assert read_results(tmp_path, "tweets", "ids") == sb.expected_results("tweets", ids)
    outputs = sorted(p.name for p in (tmp_path / "outbox" / "tweets").iterdir())
    assert outputs == ["ids.jsonl", "ids.manifest.json"]  # exactly once
    assert nothing_rejected(tmp_path)


@pytest.mark.parametrize("starts_with", ["create", "get", "download"])
async def test_a_24h_outage_of_x_ends_with_every_input_delivered_once(
    tmp_path: Path, sandbox: Sandbox, logs: LogTap, starts_with: str
) -> None:
    ids = make_ids(40, 400)
    await deliver_through(tmp_path, sandbox, logs, outage_s=DAY, kinds=("503", "reset"),
                          starts_with=starts_with, ids=ids)
    assert_delivered_once(tmp_path, sandbox, ids)
    [job] = sandbox.jobs()  # the one job lived through the outage
    assert job["status"] == "complete" and job["uploaded_ids"] == len(ids)
    assert logs.events("job.abandoned") == [] and logs.events("batch.gave_up") == []
    # The retries crossed max_stage_retries once: one error line, the rest warnings.
    stage = {"create": "creating", "get": "waiting", "download": "downloading"}[starts_with]
    incidents = [r for r in logs.events("step.retry") if r.get("incident")]
    assert [(r["stage"], r["level"]) for r in incidents] == [(stage, "error")]
    # Never more than the cap between two tries (plus the one step's own time).
    retries = logs.events("step.retry")
    assert max(r["retry_in_s"] for r in retries) <= 300


async def test_a_24h_outage_during_the_upload_costs_one_new_job_and_nothing_else(
    tmp_path: Path, sandbox: Sandbox, logs: LogTap
) -> None:
    ids = make_ids(41, 400)
    await deliver_through(tmp_path, sandbox, logs, outage_s=DAY, kinds=("503", "reset"),
                          starts_with="upload", ids=ids)
    assert_delivered_once(tmp_path, sandbox, ids)
    # The upload window (15 min) closed during the outage: exactly one new job, and the old
    # one ended by itself (expired, never uploaded) instead of blocking the slot.
    assert [(j["status"], j["uploaded_ids"]) for j in sandbox.jobs()] == [
        ("expired", 0), ("complete", len(ids))]
    assert 409 not in statuses(sandbox, "create")
    [abandoned] = logs.events("job.abandoned")
    assert abandoned["error"] == "UploadDeadlinePassed" and abandoned["stage"] == "uploading"
    assert logs.events("batch.gave_up") == []


@pytest.mark.parametrize("starts_with", ["get", "download"])
async def test_a_6_day_partition_resumed_before_the_results_expire_needs_no_second_job(
    tmp_path: Path, sandbox: Sandbox, logs: LogTap, starts_with: str
) -> None:
    ids = make_ids(42, 400)
    await deliver_through(tmp_path, sandbox, logs, outage_s=6 * DAY, kinds=("reset",),
                          starts_with=starts_with, ids=ids)
    assert_delivered_once(tmp_path, sandbox, ids)
    [job] = sandbox.jobs()
    assert job["status"] == "complete"
    assert logs.events("job.abandoned") == []
    assert statuses(sandbox, "download")[-1] == 200
