"""File work in worker threads keeps the lane's heartbeat, and so the systemd watchdog, alive
(issue 10, item 4). Splitting or normalising a 100M-ID batch takes minutes; before, the lane
looked stuck after stale_after_s, the pings stopped and systemd killed the daemon mid-delivery,
in a loop.

The slow step is made deterministic: the input is a FIFO the test feeds round by round, moving
a fake clock 100 s before each round. The heartbeat must follow the clock into every round and
the watchdog must keep pinging across 400 s of work, well past its 120 s limit.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import pytest
from clocks import FakeClock
from daemon_helpers import drop, load, make_ids, outcome, running_service, wait_for, write_config

import orchestrator.files.results as results_module
from orchestrator.daemon.activity import Activity
from orchestrator.daemon.metrics import Metrics
from orchestrator.daemon.systemd import Notifier, Watchdog
from orchestrator.files.atomic import file_sha256
from orchestrator.files.batchfiles import Slice, count_results, split_results
from orchestrator.files.idfile import normalise_id_file
from orchestrator.files.results import PROGRESS_LINES, normalise_results
from orchestrator.sandbox import Sandbox
from orchestrator.store.scratch import ResultIndex

ROUNDS = 4
ROUND_S = 100.0
STALE_S = 120.0


def result_line(n: int) -> bytes:
    return (f'{{"id":"{10**17 + n}","action":"delete","created_at":"2026-01-01T00:00:00.000Z",'
            f'"reason":"deleted"}}\n').encode()


class Rig:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.activity = Activity(1, Metrics(), clock=self.clock)
        self.pings: list[str] = []
        self.watchdog = Watchdog(
            Notifier(send=lambda m: self.pings.append(m) or True), interval_s=1.0,
            stale_s=STALE_S, heartbeat=lambda: self.activity.heartbeat, clock=self.clock,
        )


async def feed_slowly(rig: Rig, fifo: Path, work: Callable[[], Any], rounds: list[bytes]) -> Any:
    """Run `work` (which reads `fifo`) in a thread; feed one round per 100 s of fake time."""
    outcome_box: dict[str, Any] = {}

    async def run_work() -> None:
        outcome_box["value"] = await anyio.to_thread.run_sync(work)

    async with anyio.create_task_group() as group:
        group.start_soon(run_work)
        writer: BinaryIO = await anyio.to_thread.run_sync(functools.partial(open, fifo, "wb"))
        try:
            for data in rounds:
                rig.clock.advance(ROUND_S)
                await anyio.to_thread.run_sync(writer.write, data)
                await anyio.to_thread.run_sync(writer.flush)
                now = rig.clock.monotonic()
                await wait_for(lambda now=now: rig.activity.heartbeat == now, timeout=20,
                               what="the worker thread to beat the lane's heart")
                assert rig.watchdog.tick(), "the watchdog stopped pinging"
        finally:
            await anyio.to_thread.run_sync(writer.close)
    assert rig.clock.monotonic() > 3 * STALE_S  # the step really outlived the stale limit
    assert not rig.watchdog.stalled and rig.pings == ["WATCHDOG=1"] * len(rounds)
    return outcome_box["value"]


def line_rounds() -> list[bytes]:
    return [b"".join(result_line(r * PROGRESS_LINES + i) for i in range(PROGRESS_LINES))
            for r in range(ROUNDS)]


async def test_normalising_a_slow_download_keeps_the_watchdog_pinging(tmp_path: Path) -> None:
    rig = Rig()
    fifo = tmp_path / "raw"
    os.mkfifo(fifo)
    report = await feed_slowly(
        rig, fifo,
        lambda: normalise_results(fifo, tmp_path / "out.jsonl", rig.activity.pulse(0)),
        line_rounds(),
    )
    assert report.affected == ROUNDS * PROGRESS_LINES


async def test_splitting_a_slow_pack_keeps_the_watchdog_pinging(tmp_path: Path) -> None:
    rig = Rig()
    fifo = tmp_path / "results.jsonl"
    os.mkfifo(fifo)
    ids = tmp_path / "a.ids"
    ids.write_text("".join(f"{10**17 + n}\n" for n in range(ROUNDS * PROGRESS_LINES)))

    def split() -> list[Any]:
        with ResultIndex(tmp_path / "index.db") as index:
            return split_results(fifo, [(Slice(ids), tmp_path / "a.jsonl")], index,
                                 rig.activity.pulse(0))

    counts = await feed_slowly(rig, fifo, split, line_rounds())
    assert counts[0].affected == ROUNDS * PROGRESS_LINES


async def test_hashing_a_slow_file_keeps_the_watchdog_pinging(tmp_path: Path) -> None:
    rig = Rig()
    fifo = tmp_path / "big.jsonl"
    os.mkfifo(fifo)
    block = b"x" * (1 << 20)  # file_sha256 reads 1 MiB blocks
    digest = await feed_slowly(
        rig, fifo, lambda: file_sha256(fifo, rig.activity.pulse(0)), [block] * ROUNDS
    )
    assert len(digest) == 64


def test_counting_and_validating_call_progress_as_they_go(tmp_path: Path) -> None:
    results = tmp_path / "r.jsonl"
    results.write_bytes(b"".join(line_rounds()))
    calls: list[int] = []
    count_results(results, lambda: calls.append(1))
    assert len(calls) == ROUNDS  # one per PROGRESS_LINES lines

    source = tmp_path / "in.txt"
    source.write_text("".join(f"{10**17 + n}\n" for n in range(50_000)))
    calls.clear()
    normalise_id_file(source, tmp_path / "in.ids", block_size=64 * 1024,
                      progress=lambda: calls.append(1))
    assert len(calls) >= source.stat().st_size // (64 * 1024)


async def test_the_runner_beats_from_its_worker_threads(
    tmp_path: Path, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Wiring: download and delivery pass the lane's pulse to the thread work."""
    monkeypatch.setattr(results_module, "PROGRESS_LINES", 1)  # every line beats
    from_threads: list[str] = []
    original = Activity.pulse

    def recording_pulse(self: Activity, lane: int | None) -> Callable[[], None]:
        beat = original(self, lane)

        def wrapped() -> None:
            if threading.current_thread() is not threading.main_thread():
                from_threads.append(threading.current_thread().name)
            beat()

        return wrapped

    monkeypatch.setattr(Activity, "pulse", recording_pulse)
    config = load(write_config(tmp_path, sandbox.base_url))
    async with running_service(config):
        drop(tmp_path, "tweets", "a.txt", make_ids(3, 50))
        await wait_for(lambda: outcome(tmp_path, "tweets", "a.txt") == "delivered",
                       what="delivery")
    assert from_threads
