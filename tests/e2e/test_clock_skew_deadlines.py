"""Issue 10, clock skew on X's deadlines: `upload_expires_at` (created + 900 s) and
`download_expires_at` are instants on X's clock. With the local clock 15 minutes ahead of X,
judged locally the upload window has already closed when the job is created, and the daemon
abandoned every job. The X client measures X's clock from each response's `Date` header and
moves a job's times onto the local clock (remote/xapi.py), so the deadlines hold either way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from daemon_helpers import TOKEN, db_rows, drop, load, make_ids, read_results, wait_for
from resilience_helpers import LogTap, daemon, settled, tap_logs, write_config_ex

from orchestrator.core.model import JobType
from orchestrator.remote.xapi import XApi, make_session
from orchestrator.sandbox import Sandbox, SandboxClock, SandboxConfig

# Offset of the sandbox ("X") clock from real time; the local clock is the real one.
SKEWS = {"local-15min-ahead": -900.0, "local-15min-behind": 900.0}


@pytest.fixture(params=list(SKEWS.values()), ids=list(SKEWS))
async def skewed(request: pytest.FixtureRequest) -> AsyncIterator[Sandbox]:
    clock = SandboxClock(datetime.now(UTC) + timedelta(seconds=request.param))
    # The real 15-minute upload window: exactly what the skew used to eat up.
    config = SandboxConfig(token=TOKEN, processing_time_s=0.2, seed=12)
    async with Sandbox(config, clock=clock) as sb:
        yield sb


@pytest.fixture
def logs() -> Iterator[LogTap]:
    with tap_logs() as tap:
        yield tap


async def test_a_jobs_deadlines_are_moved_onto_the_local_clock(skewed: Sandbox) -> None:
    async with make_session(connect_timeout_s=5, read_timeout_s=10) as session:
        api = XApi(session, skewed.base_url, TOKEN)  # the local clock: the system one
        job = await api.create_job(JobType.TWEETS, name="skew")
        local_now = datetime.now(UTC)
        # 15 minutes from now on our clock, not from now on X's, give or take Date's second.
        assert abs((job.upload_expires_at - local_now).total_seconds() - 900) <= 3
        assert abs((job.download_expires_at - local_now).total_seconds() - 7 * 86400) <= 3
        assert abs((job.created_at - local_now).total_seconds()) <= 3
        assert abs(api.clock_offset_s - (skewed.clock.now() - local_now).total_seconds()) <= 2
        again = await api.get_job(job.id)
        assert abs((again.upload_expires_at - job.upload_expires_at).total_seconds()) <= 2


async def test_a_job_still_uploads_and_delivers_with_the_clocks_15_minutes_apart(
    tmp_path: Path, skewed: Sandbox, logs: LogTap
) -> None:
    # The production upload margin (60 s), not the test suite's 1 s.
    config = load(write_config_ex(tmp_path, skewed.base_url, upload_margin_s=60.0))
    ids = make_ids(2, 300)
    async with daemon(config):
        drop(tmp_path, "tweets", "ids.txt", ids)
        await wait_for(lambda: settled(tmp_path, "tweets", "ids.txt"), timeout=30,
                       what="delivery")
    assert read_results(tmp_path, "tweets", "ids") == skewed.expected_results("tweets", ids)
    [job] = skewed.jobs()
    assert job["status"] == "complete" and job["uploaded_ids"] == len(ids)
    assert logs.events("job.abandoned") == []
    [skew] = logs.events("xapi.clock_skew")
    assert abs(abs(skew["offset_s"]) - 900) <= 2
    [row] = db_rows(tmp_path, "SELECT created_at, upload_expires_at FROM batches")
    window = (datetime.fromisoformat(row["upload_expires_at"])
              - datetime.fromisoformat(row["created_at"])).total_seconds()
    assert 895 <= window <= 903  # stored on the local clock, like every other timestamp
