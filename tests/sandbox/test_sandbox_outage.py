"""The sandbox's time-bounded outages (Faults.outage, POST /_sandbox/faults {"outage_s"}) and
the sleeping that goes through the Clock (Wakeup.wait(clock=...)), the two halves of the
time-warped long-fault tests (tests/test_long_outages.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest
from clocks import FakeClock, SandboxTime

from orchestrator.clock import SYSTEM_CLOCK
from orchestrator.sandbox import Sandbox, SandboxClock, SandboxConfig
from orchestrator.sandbox.faults import Faults
from orchestrator.wakeup import Wakeup

TOKEN = "outage-token-3c1d"
START = datetime(2026, 3, 1, tzinfo=UTC)


def test_an_outage_fails_every_request_until_the_clock_passes_its_end() -> None:
    clock = SandboxClock(START)
    clock.freeze()
    faults = Faults(clock=clock)
    faults.outage(3600, ("503", "reset"))
    kinds = [fault.kind for endpoint in ("create", "upload", "get", "download")
             if (fault := faults.take(endpoint)) is not None]
    assert kinds == ["503", "reset", "503", "reset"]  # every endpoint, kinds in turn
    clock.advance(3599)
    assert faults.take("list") is not None
    clock.advance(1)
    assert faults.take("list") is None and faults.pending() == []  # over by itself


def test_an_outage_may_start_with_the_first_request_to_one_endpoint() -> None:
    clock = SandboxClock(START)
    clock.freeze()
    faults = Faults(clock=clock)
    faults.add("create", "500")  # count faults queue alongside
    faults.outage(60, ("503",), starts_with="upload")
    assert faults.take("create") is not None and faults.take("create") is None
    clock.advance(3600)  # not started yet: the clock does not use it up
    assert faults.take("get") is None
    assert faults.take("upload") is not None  # starts here...
    assert faults.take("get") is not None  # ...and then covers everything
    [pending] = faults.pending()
    assert pending["until"] is not None and pending["kinds"] == ["503"]
    clock.advance(60)
    assert faults.take("upload") is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"seconds": 0}, "> 0"), ({"seconds": 5, "kinds": ("slow",)}, "kinds"),
     ({"seconds": 5, "starts_with": "*"}, "starts_with")],
)
def test_outages_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Faults(clock=SandboxClock()).outage(**kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def sb() -> AsyncIterator[Sandbox]:
    async with Sandbox(SandboxConfig(token=TOKEN, processing_time_s=0),
                       clock=SandboxClock(START)) as sandbox:
        yield sandbox


async def test_an_outage_over_the_http_controls_ends_when_the_clock_is_advanced(
    sb: Sandbox,
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    jobs = f"{sb.base_url}/2/compliance/jobs?type=tweets"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sb.base_url}/_sandbox/faults",
                             json={"outage_s": 7200, "kinds": ["503"], "starts_with": "list"}
                             ) as resp:
            assert resp.status == 200
            [fault] = (await resp.json())["faults"]
            assert fault["outage_s"] == 7200 and fault["until"] is None
        async with http.post(f"{sb.base_url}/_sandbox/faults",
                             json={"outage_s": 60, "kinds": ["slow"]}) as resp:
            assert resp.status == 400
        for expected in (503, 503):
            async with http.get(jobs, headers=auth) as resp:
                assert resp.status == expected
        async with http.post(f"{sb.base_url}/_sandbox/clock", json={"advance": 7200}) as resp:
            assert resp.status == 200
        async with http.get(jobs, headers=auth) as resp:
            assert resp.status == 200


async def test_a_sleep_through_a_test_clock_skips_ahead_at_once() -> None:
    clock = FakeClock(START)
    wakeup = Wakeup()
    began = time.monotonic()
    assert await wakeup.wait(6 * 3600, clock=clock) is False
    assert clock.now() == START.replace(hour=6) and clock.slept == 6 * 3600
    assert time.monotonic() - began < 1.0
    # The sandbox adapter does the same to X's clock.
    sandbox_clock = SandboxClock(START)
    frozen_at = sandbox_clock.freeze()
    warped = SandboxTime(sandbox_clock, warp=True)
    await wakeup.wait(900, clock=warped)
    assert (sandbox_clock.now() - frozen_at).total_seconds() == 900 == warped.warped_s


async def test_a_notification_still_ends_the_sleep_and_real_time_caps_it() -> None:
    wakeup = Wakeup()
    wakeup.notify()
    assert await wakeup.wait(3600, clock=SYSTEM_CLOCK) is True
    began = time.monotonic()
    assert await wakeup.wait(3600, clock=SYSTEM_CLOCK, real_cap_s=0.05) is False
    assert 0.04 <= time.monotonic() - began < 1.0
