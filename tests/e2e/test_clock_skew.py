"""Issue 10 item 10: a local clock 15 minutes off X's must not change how long a 429 waits.

`x-rate-limit-reset` is an instant on X's clock. The sandbox's clock is set 15 minutes
ahead of or behind real time (so the local clock is behind or ahead of the "server"), and
it sends `Date` from that clock, as X does from its own. The client measures the reset
against `Date`, so every wait is the server's wait, within a second.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from daemon_helpers import TOKEN, drop, load, make_ids, wait_for
from resilience_helpers import LogTap, daemon, settled, tap_logs, write_config_ex

from orchestrator.core.model import JobType
from orchestrator.errors import RateLimited
from orchestrator.remote.xapi import XApi, make_session
from orchestrator.sandbox import Sandbox, SandboxClock

# Offset of the sandbox ("X") clock from real time; the local clock is the real one.
SKEWS = {"local-15min-ahead": -900.0, "local-15min-behind": 900.0}


@pytest.fixture(params=list(SKEWS.values()), ids=list(SKEWS))
async def skewed(
    request: pytest.FixtureRequest, make_sandbox: Callable[..., Sandbox]
) -> AsyncIterator[Sandbox]:
    clock = SandboxClock(datetime.now(UTC) + timedelta(seconds=request.param))
    # Long upload window: these tests are about 429 waits, not about upload deadlines.
    async with make_sandbox(clock=clock, upload_window_s=7200) as sb:
        yield sb


@pytest.fixture
async def api(skewed: Sandbox) -> AsyncIterator[XApi]:
    async with make_session(connect_timeout_s=5, read_timeout_s=10) as session:
        yield XApi(session, skewed.base_url, TOKEN)  # the local clock: the system one


async def test_sandbox_sends_date_from_its_own_clock(skewed: Sandbox) -> None:
    async with aiohttp.ClientSession() as http, http.get(
        f"{skewed.base_url}/2/compliance/jobs?type=tweets",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as response:
        date = datetime.strptime(response.headers["Date"], "%a, %d %b %Y %H:%M:%S GMT")
    assert abs(date.replace(tzinfo=UTC).timestamp() - skewed.clock.timestamp()) <= 1.5


async def test_a_scripted_429_waits_the_servers_seconds(skewed: Sandbox, api: XApi) -> None:
    job = await api.create_job(JobType.TWEETS, name="skew")
    skewed.faults.add("get", "429", retry_after=30)
    with pytest.raises(RateLimited) as caught:
        await api.get_job(job.id)
    assert caught.value.retry_after == pytest.approx(30, abs=1.0)
    assert api.budget.wait_before("get", time.time()) == pytest.approx(30, abs=1.0)


async def test_an_exhausted_window_waits_until_its_reset(skewed: Sandbox, api: XApi) -> None:
    skewed.configure(rate_limit=2, rate_window_s=600)
    started = time.time()
    job = await api.create_job(JobType.TWEETS, name="skew")
    await api.get_job(job.id)
    await api.get_job(job.id)  # the window's last request
    left = 600 - (time.time() - started)
    assert api.budget.wait_before("get", time.time()) == pytest.approx(left, abs=1.0)
    with pytest.raises(RateLimited) as caught:
        await api.get_job(job.id)
    assert caught.value.retry_after == pytest.approx(left, abs=1.0)
    # A bucket with room left is not a reason to wait, skew or not.
    assert api.budget.wait_before("create", time.time()) == 0.0


RESET_IN = 6


@pytest.fixture
def logs() -> Iterator[LogTap]:
    with tap_logs() as tap:
        yield tap


def _get_times(logs: LogTap, status: int | None = None) -> list[float]:
    return [datetime.fromisoformat(str(r["timestamp"]).replace("Z", "+00:00")).timestamp()
            for r in logs.daemon_records()
            if r.get("event") == "xapi.request" and r.get("endpoint") == "get"
            and (status is None or r.get("http_status") == status)]


async def test_the_daemon_waits_the_servers_seconds_after_a_429(
    tmp_path: Path, skewed: Sandbox, logs: LogTap
) -> None:
    config = load(write_config_ex(tmp_path, skewed.base_url))
    ids = make_ids(1, 50)
    skewed.faults.add("get", "429", retry_after=RESET_IN)
    async with daemon(config):
        drop(tmp_path, "tweets", "ids.txt", ids)
        await wait_for(lambda: settled(tmp_path, "tweets", "ids.txt"), timeout=30,
                       what="delivery")
    [limited] = _get_times(logs, 429)
    following = [t for t in _get_times(logs) if t > limited]
    assert following, "no poll after the 429"
    # The retry policy adds 0.5-3 s of jitter past the reset (core.retry): the wait is the
    # server's RESET_IN plus that, give or take the second of Date's resolution.
    assert RESET_IN - 0.5 <= following[0] - limited <= RESET_IN + 3.0 + 1.0
