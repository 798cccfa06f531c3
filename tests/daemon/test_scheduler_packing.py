"""When the scheduler turns queued files into a pack: real intake, store and spool, a fake
clock. A burst's pack waits for the claim pass and the quiet period; a steady trickle is
bounded by pack_wait_s; a full pack never waits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from clocks import FakeClock
from daemon_helpers import make_ids

from orchestrator.core.model import Batch, JobType
from orchestrator.daemon.arrivals import Arrivals
from orchestrator.daemon.intake import Intake
from orchestrator.daemon.scheduler import PackingLimits, Scheduler
from orchestrator.files.inbox import Candidate
from orchestrator.layout import Layout
from orchestrator.store.sqlite import Store

TYPES = (JobType.TWEETS, JobType.USERS)


class Rig:
    def __init__(self, tmp_path: Path, store: Store, layout: Layout, clock: FakeClock) -> None:
        self.tmp_path, self.store, self.layout, self.clock = tmp_path, store, layout, clock
        self.intake = Intake(store, layout)
        self.settled = 0
        self.arrivals = Arrivals(on_settled=self._settled)
        self.dropped = 0

    def _settled(self) -> None:
        self.settled += 1

    def scheduler(self, **limits: float | int) -> Scheduler:
        return Scheduler(self.store, self.layout, PackingLimits(**limits),  # type: ignore[arg-type]
                         self.arrivals)

    def drop(self, count: int = 1, ids: int = 10) -> list[Candidate]:
        """Files in the inbox, as one scan would hand them to intake."""
        found = []
        for _ in range(count):
            path = self.layout.inbox_for(JobType.TWEETS) / f"f{self.dropped:04}.txt"
            path.write_text("".join(f"{i}\n" for i in make_ids(self.dropped, ids)))
            self.dropped += 1
            st = path.stat()
            found.append(Candidate(path, JobType.TWEETS, st.st_size, st.st_mtime_ns,
                                   st.st_ino, st.st_ctime_ns))
        return found

    async def claim(self, candidates: list[Candidate]) -> None:
        for candidate in candidates:
            try:
                assert await self.intake.claim(candidate) is not None
            finally:
                self.arrivals.done(candidate)

    async def members(self, batch: Batch) -> list[str]:
        return [p.input.name for p in await self.store.batch_parts(batch.id)]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    layout = Layout(tmp_path / "inbox", tmp_path / "outbox", tmp_path / "state")
    layout.ensure()
    layout.inbox_for(JobType.TWEETS).mkdir(parents=True)
    clock = FakeClock()
    store = await Store.open(layout.db_path, clock)
    try:
        yield Rig(tmp_path, store, layout, clock)
    finally:
        await store.close()


async def test_a_pack_waits_until_the_claim_pass_is_over(rig: Rig) -> None:
    scheduler = rig.scheduler(pack_quiet_s=1.0, pack_wait_s=60.0)
    burst = rig.drop(10)
    rig.arrivals.scanned(burst)
    await rig.claim(burst[:1])
    rig.clock.advance(5.0)  # a slow claim pass: the quiet period is long over
    assert await scheduler.next_batch(TYPES) is None
    # It would look again at the wait's end; the pass's end wakes it sooner.
    assert scheduler.idle_wait_s(300.0) == pytest.approx(55.0)
    await rig.claim(burst[1:])
    assert rig.settled == 1
    rig.clock.advance(1.0)
    batch = await scheduler.next_batch(TYPES)
    assert batch is not None
    assert await rig.members(batch) == [c.path.name for c in burst]


async def test_a_single_file_waits_the_quiet_period_only(rig: Rig) -> None:
    scheduler = rig.scheduler(pack_quiet_s=1.0, pack_wait_s=60.0)
    one = rig.drop()
    rig.arrivals.scanned(one)
    await rig.claim(one)
    assert await scheduler.next_batch(TYPES) is None
    assert scheduler.idle_wait_s(300.0) == pytest.approx(1.0)
    rig.clock.advance(1.0)
    batch = await scheduler.next_batch(TYPES)
    assert batch is not None and await rig.members(batch) == ["f0000.txt"]


async def test_files_queued_within_the_quiet_period_of_each_other_share_the_pack(
    rig: Rig,
) -> None:
    scheduler = rig.scheduler(pack_quiet_s=1.0, pack_wait_s=60.0)
    for _ in range(5):  # five scans 0.8 s apart: never a quiet second
        found = rig.drop()
        rig.arrivals.scanned(found)
        await rig.claim(found)
        assert await scheduler.next_batch(TYPES) is None
        rig.clock.advance(0.8)
    rig.clock.advance(0.2)
    batch = await scheduler.next_batch(TYPES)
    assert batch is not None and len(await rig.members(batch)) == 5


async def test_pack_wait_bounds_the_wait_under_a_steady_trickle(rig: Rig) -> None:
    scheduler = rig.scheduler(pack_quiet_s=1.0, pack_wait_s=3.0)
    batch = None
    elapsed = 0.0
    while batch is None:  # a file every 0.5 s, for ever: never quiet for 1 s
        found = rig.drop()
        rig.arrivals.scanned(found)
        await rig.claim(found)
        batch = await scheduler.next_batch(TYPES)
        if batch is None:
            assert scheduler.idle_wait_s(300.0) <= 1.0
            rig.clock.advance(0.5)
            elapsed += 0.5
        assert elapsed <= 3.0
    assert elapsed == 3.0  # formed at the oldest file's wait, with what had come by then
    assert len(await rig.members(batch)) == 7


async def test_a_full_pack_is_formed_at_once(rig: Rig) -> None:
    scheduler = rig.scheduler(pack_quiet_s=1.0, pack_wait_s=60.0, max_ids_per_job=25)
    burst = rig.drop(4, ids=10)
    rig.arrivals.scanned(burst)
    await rig.claim(burst[:3])  # 20 IDs fit, the third file's 10 do not: the pack is full
    batch = await scheduler.next_batch(TYPES)
    assert batch is not None
    assert await rig.members(batch) == [burst[0].path.name, burst[1].path.name]


async def test_no_wait_forms_the_pack_right_after_the_claim_pass(rig: Rig) -> None:
    scheduler = rig.scheduler(pack_quiet_s=1.0, pack_wait_s=0.0)
    burst = rig.drop(3)
    rig.arrivals.scanned(burst)
    await rig.claim(burst)
    batch = await scheduler.next_batch(TYPES)
    assert batch is not None and len(await rig.members(batch)) == 3
