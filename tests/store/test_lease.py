"""The leader lease, the fence and the hosts' heartbeats (issue 12): two hosts are two stores on
one database, sharing the test's clock, which moves time across the lease's expiry."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest
from clocks import FakeClock
from store_helpers import queued_input

from orchestrator.core import machine
from orchestrator.core.model import BatchState, InputState, JobType
from orchestrator.errors import LeaseLost
from orchestrator.store.sqlite import StaleState, Store

TTL = 30.0
PeerOpener = Callable[[str], Awaitable[Store]]  # the `open_peer` fixture


def pass_time(store: Store, seconds: float) -> None:
    clock = store.clock
    assert isinstance(clock, FakeClock)
    clock.advance(seconds)


async def test_a_fresh_store_has_a_free_lease_and_no_hosts(store: Store) -> None:
    view = await store.cluster_view()
    assert (view.holder, view.epoch, view.leader, view.lease_age_s) == (None, 0, None, None)
    assert view.hosts == ()
    assert view.db_now == store.clock.now()


async def test_one_host_holds_the_lease_and_the_other_waits(open_peer: PeerOpener) -> None:
    a, b = await open_peer("a"), await open_peer("b")
    assert await a.acquire_lease("a", TTL) == 1
    assert await b.acquire_lease("b", TTL) is None
    view = await b.cluster_view()
    assert (view.holder, view.epoch, view.leader) == ("a", 1, "a")
    assert view.expires_at == view.acquired_at + timedelta(seconds=TTL)  # type: ignore[operator]
    pass_time(a, 10)
    assert await a.renew_lease("a", 1, TTL)
    assert not await a.renew_lease("a", 2, TTL)  # not its epoch
    assert not await b.renew_lease("b", 1, TTL)  # not its lease
    view = await b.cluster_view()
    assert view.renewed_at == a.clock.now()
    assert view.lease_age_s == 0.0
    pass_time(a, 5)
    assert (await b.cluster_view()).lease_age_s == 5.0


async def test_an_expired_lease_goes_to_the_next_host_with_a_new_epoch(
    open_peer: PeerOpener,
) -> None:
    a, b = await open_peer("a"), await open_peer("b")
    assert await a.acquire_lease("a", TTL) == 1
    pass_time(a, TTL - 1)
    assert await b.acquire_lease("b", TTL) is None  # still running
    pass_time(a, 2)
    assert (await b.cluster_view()).leader is None  # expired, nobody took it yet
    assert await b.acquire_lease("b", TTL) == 2
    assert not await a.renew_lease("a", 1, TTL)
    assert await a.acquire_lease("a", TTL) is None
    assert (await a.cluster_view()).leader == "b"


async def test_an_expired_lease_nobody_took_still_renews(open_peer: PeerOpener) -> None:
    a = await open_peer("a")
    assert await a.acquire_lease("a", TTL) == 1
    pass_time(a, TTL + 5)
    assert await a.renew_lease("a", 1, TTL)
    assert (await a.cluster_view()).leader == "a"


async def test_the_same_host_restarted_takes_its_lease_back_at_once(
    open_peer: PeerOpener,
) -> None:
    before, b = await open_peer("a"), await open_peer("b")
    assert await before.acquire_lease("a", TTL) == 1
    after = await open_peer("a")  # the restarted process: its per-host lock proves the old gone
    assert await after.acquire_lease("a", TTL) == 2
    assert not await before.renew_lease("a", 1, TTL)
    assert await b.acquire_lease("b", TTL) is None


async def test_a_released_lease_is_free_at_once(open_peer: PeerOpener) -> None:
    a, b = await open_peer("a"), await open_peer("b")
    assert await a.acquire_lease("a", TTL) == 1
    await b.release_lease("b", 1)  # not b's: nothing changes
    await a.release_lease("a", 7)  # not this epoch: nothing changes
    assert (await b.cluster_view()).leader == "a"
    await a.release_lease("a", 1)
    view = await b.cluster_view()
    assert (view.holder, view.leader, view.lease_age_s) == (None, None, None)
    assert await b.acquire_lease("b", TTL) == 2
    assert not await a.renew_lease("a", 1, TTL)


async def test_a_fenced_write_fails_once_the_lease_expired_and_writes_nothing(
    open_peer: PeerOpener,
) -> None:
    a = await open_peer("a")
    first, second = await queued_input(a, "a.txt"), await queued_input(a, "b.txt")
    epoch = await a.acquire_lease("a", TTL)
    assert epoch is not None
    a.set_fence("a", epoch)
    batch = await a.form_batch(JobType.TWEETS, [(first, 0, 0, 3)], upload_name="one.ids",
                               id_count=3, upload_bytes=30)
    pass_time(a, TTL + 1)
    events = len(await a.events_after(0))
    with pytest.raises(LeaseLost, match="no longer holds the leader lease"):
        await a.form_batch(JobType.TWEETS, [(second, 0, 0, 3)], upload_name="two.ids",
                           id_count=3, upload_bytes=30)
    with pytest.raises(LeaseLost):
        await a.apply(batch, machine.Decision(BatchState.CANCELLED, "batch.cancelled"))
    assert len(await a.events_after(0)) == events
    got = await a.get_batch(batch.id)
    assert got is not None and got.state is BatchState.QUEUED
    item = await a.get_input(second)
    assert item is not None and item.state is InputState.QUEUED
    assert await a.active_batches([JobType.TWEETS]) == [got]
    # Claims are not fenced: every host claims, leader or not.
    await queued_input(a, "c.txt")
    with pytest.raises(LeaseLost):
        await a.move_input(second, [InputState.QUEUED], InputState.REJECTED, event="t",
                           fenced=True)


async def test_a_leader_taken_over_cannot_write_over_its_successor(
    open_peer: PeerOpener,
) -> None:
    a, b = await open_peer("a"), await open_peer("b")
    input_id = await queued_input(a)
    epoch = await a.acquire_lease("a", TTL)
    assert epoch == 1
    a.set_fence("a", epoch)
    batch = await a.form_batch(JobType.TWEETS, [(input_id, 0, 0, 3)], upload_name="x.ids",
                               id_count=3, upload_bytes=30)
    pass_time(a, TTL + 1)
    assert await b.acquire_lease("b", TTL) == 2
    b.set_fence("b", 2)
    with pytest.raises(LeaseLost):
        await a.apply(batch, machine.Decision(BatchState.CREATING, "batch.creating"))
    # Renewing a's old epoch cannot resurrect it; b writes on.
    assert not await a.renew_lease("a", 1, TTL)
    moved = await b.apply(batch, machine.Decision(BatchState.CREATING, "batch.creating"))
    assert moved.state is BatchState.CREATING


async def test_an_unfenced_store_writes_whoever_holds_the_lease(open_peer: PeerOpener) -> None:
    a, tool = await open_peer("a"), await open_peer("b")
    input_id = await queued_input(a)
    assert await a.acquire_lease("a", TTL) == 1
    # An operator's command (no fence set) still cancels: the daemons re-read the state.
    batch = await tool.form_batch(JobType.TWEETS, [(input_id, 0, 0, 3)], upload_name="x.ids",
                                  id_count=3, upload_bytes=30)
    tool.set_fence("b", 5)
    tool.set_fence("b", None)
    done = await tool.apply(batch, machine.Decision(BatchState.CANCELLED, "batch.cancelled"))
    assert done.state is BatchState.CANCELLED


async def test_heartbeats_upsert_one_row_per_host(open_peer: PeerOpener) -> None:
    a = await open_peer("a")
    await a.heartbeat("b", "standby", 200, "1.0")
    await a.heartbeat("a", "leader", 100, "1.0")
    started = a.clock.now()
    pass_time(a, 3)
    await a.heartbeat("a", "leader", 100, "1.0")
    view = await a.cluster_view()
    assert [(h.host_id, h.role, h.pid) for h in view.hosts] == [
        ("a", "leader", 100), ("b", "standby", 200)]
    host = view.hosts[0]
    assert (host.started_at, host.last_seen, host.version) == (started, a.clock.now(), "1.0")
    pass_time(a, 3)
    await a.heartbeat("a", "standby", 101, "1.1")  # a new process: a new start
    host = (await a.cluster_view()).hosts[0]
    assert (host.role, host.pid, host.version) == ("standby", 101, "1.1")
    assert host.started_at == host.last_seen == a.clock.now()


async def test_every_event_row_names_the_host_that_wrote_it(
    store: Store, open_peer: PeerOpener,
) -> None:
    b = await open_peer("host-b")
    await queued_input(b)
    assert await b.acquire_lease("host-b", TTL) == 1
    await queued_input(store, "z.txt")
    rows = await store.events_after(0)
    hosts = [(r["kind"], r["host_id"]) for r in rows]
    assert hosts[:4] == [("inbox.claiming", "host-b"), ("t", "host-b"), ("t", "host-b"),
                         ("cluster.lease_acquired", "host-b")]
    assert {h for _, h in hosts[4:]} == {None}  # the fixture's store has no host_id


async def test_two_hosts_claiming_one_outbox_name_get_one_row(open_peer: PeerOpener) -> None:
    a, b = await open_peer("a"), await open_peer("b")
    await a.insert_claiming(job_type=JobType.TWEETS, name="x.txt", out_stem="x",
                            spool_name="a.spool", inode=1, size_bytes=3)
    with pytest.raises(StaleState, match="taken meanwhile"):
        await b.insert_claiming(job_type=JobType.TWEETS, name="x.txt", out_stem="x",
                                spool_name="b.spool", inode=1, size_bytes=3)
    assert [i.spool_name for i in await b.inputs_in([InputState.CLAIMING])] == ["a.spool"]
