"""Leader or standby (daemon/cluster.py) on real stores: two hosts are two Store objects on one
SQLite file with one fake clock; the request seam is a real aiohttp session against a
loopback server that records what reached it."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from aiohttp import web
from clocks import FakeClock

from orchestrator.daemon.cluster import LEADER, STANDBY, STOPPED, Cluster, standby_verdict
from orchestrator.daemon.cluster import user_agent as agent_of
from orchestrator.daemon.lock import AlreadyRunning, StateLock, lock_file_name
from orchestrator.errors import LeaseLost
from orchestrator.remote.xapi import make_session
from orchestrator.store.sqlite import Store

TTL = 30.0


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[tuple[Store, Store, FakeClock]]:
    clock = FakeClock()
    a = await Store.open(tmp_path / "state.db", clock, host_id="a")
    b = await Store.open(tmp_path / "state.db", clock, host_id="b")
    try:
        yield a, b, clock
    finally:
        await a.close()
        await b.close()


def cluster(store: Store, host: str, clock: FakeClock) -> Cluster:
    return Cluster(store, host_id=host, ttl_s=TTL, renew_s=TTL / 3, clock=clock)


async def test_the_first_host_leads_and_the_second_stands_by(
    stores: tuple[Store, Store, FakeClock],
) -> None:
    a_store, b_store, clock = stores
    a, b = cluster(a_store, "a", clock), cluster(b_store, "b", clock)
    await a.tick()
    await b.tick()
    assert (a.role, b.role) == (LEADER, STANDBY)
    assert a.became_leader.is_set() and not b.became_leader.is_set()
    a.check()
    with pytest.raises(LeaseLost, match="not the leader"):
        b.check()
    view = b.view
    assert view is not None and view.leader == "a"
    assert {h.host_id: h.role for h in view.hosts} == {"a": LEADER, "b": STANDBY}
    await a.tick()  # a renews, and now sees b's heartbeat
    assert a.standbys() == 1 and b.standbys() == 0
    # The leader's fence is set: its writes check the lease in their own transaction.
    assert a_store._fence == ("a", 1) and b_store._fence is None


async def test_a_leader_that_cannot_renew_stops_sending_before_the_lease_can_expire(
    stores: tuple[Store, Store, FakeClock],
) -> None:
    a_store, b_store, clock = stores
    a, b = cluster(a_store, "a", clock), cluster(b_store, "b", clock)
    await a.tick()
    clock.advance(TTL - a.margin_s - 0.1)
    a.check()  # still inside its deadline
    clock.advance(0.2)
    with pytest.raises(LeaseLost, match="deadline passed"):
        a.check()
    # ... and the lease is still a's in the database: the standby cannot take it yet.
    await b.tick()
    assert b.role == STANDBY
    clock.advance(a.margin_s)
    await b.tick()
    assert b.role == LEADER
    b.check()


async def test_a_refused_renewal_ends_the_leadership_at_once(
    stores: tuple[Store, Store, FakeClock],
) -> None:
    a_store, b_store, clock = stores
    a, b = cluster(a_store, "a", clock), cluster(b_store, "b", clock)
    await a.tick()
    clock.advance(TTL + 1)  # a stalled past the TTL (a paused VM): b takes over
    await b.tick()
    assert b.role == LEADER
    with pytest.raises(LeaseLost, match="another host holds the lease"):
        await a.tick()
    assert a.role == STANDBY
    with pytest.raises(LeaseLost):
        a.check()


async def test_a_renewal_that_does_not_answer_before_the_deadline_ends_it(
    stores: tuple[Store, Store, FakeClock], tmp_path: Path,
) -> None:
    a_store, _, clock = stores
    a = cluster(a_store, "a", clock)
    await a.tick()
    clock.advance(TTL - a.margin_s - 0.3)  # 0.3 s of the deadline left
    blocker = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")  # the database does not answer writes
        with anyio.fail_after(10), pytest.raises(LeaseLost, match="lost the leader lease"):
            await a.tick()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert a.role == STANDBY


async def test_a_clean_stop_releases_the_lease_to_the_standby_at_once(
    stores: tuple[Store, Store, FakeClock],
) -> None:
    a_store, b_store, clock = stores
    a, b = cluster(a_store, "a", clock), cluster(b_store, "b", clock)
    await a.tick()
    await b.tick()
    await a.release()
    assert a.role == STOPPED
    await b.tick()  # no waiting for the TTL
    assert b.role == LEADER and b.epoch == 2
    view = b.view
    assert view is not None and {h.host_id: h.role for h in view.hosts}["a"] == STOPPED


async def test_without_enforcement_the_lease_is_kept_but_nothing_is_refused(
    stores: tuple[Store, Store, FakeClock],
) -> None:
    a_store, _, clock = stores
    one = Cluster(a_store, host_id="a", ttl_s=TTL, renew_s=10, clock=clock, enforce=False)
    await one.tick()
    assert one.is_leader and a_store._fence is None
    clock.advance(10 * TTL)
    one.check()
    await one.tick()  # renews the expired lease nobody took
    assert one.lease_age_s() == 0.0


async def test_a_standby_is_healthy_and_says_so_while_its_loop_runs(
    stores: tuple[Store, Store, FakeClock],
) -> None:
    a_store, b_store, clock = stores
    await cluster(a_store, "a", clock).tick()
    b = cluster(b_store, "b", clock)
    await b.tick()
    verdict = standby_verdict(b, "running", 120.0)
    assert (verdict.healthy, verdict.reason) == (True, "standby: ready to take over")
    assert verdict.detail["role"] == STANDBY and verdict.detail["leader"] == "a"
    clock.advance(200)
    late = standby_verdict(b, "running", 120.0)
    assert not late.healthy and "silent" in late.reason
    assert not standby_verdict(b, "starting", 120.0).healthy


async def test_a_standby_tries_again_just_after_the_lease_can_expire(
    stores: tuple[Store, Store, FakeClock],
) -> None:
    a_store, b_store, clock = stores
    a, b = cluster(a_store, "a", clock), cluster(b_store, "b", clock)
    await a.tick()
    clock.advance(TTL / 3 - 1)  # a dies 1 s before its next renewal: 21 s of lease left
    await b.tick()
    assert b.role == STANDBY
    assert b._wait_s() == TTL / 3  # the lease ends later than a round away
    clock.advance(15)
    assert b._wait_s() == pytest.approx(6.1)  # read 15 s ago: 6 s left, then a little
    clock.advance(b._wait_s())
    await b.tick()
    assert b.role == LEADER  # 30.1 s after a's last renewal, not up to a round later


async def test_a_standby_whose_view_cannot_be_read_keeps_its_round_not_a_busy_loop(
    stores: tuple[Store, Store, FakeClock], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Lease rounds work but reading the cluster view fails (the one query that reads every
    host): the stale view's lease has long run out, and timing the wake-up by it would make
    the standby poll the database every MIN_WAIT_S."""
    a_store, b_store, clock = stores
    a, b = cluster(a_store, "a", clock), cluster(b_store, "b", clock)
    await a.tick()
    clock.advance(8)
    await a.tick()  # a's lease now ends at 38 s
    clock.advance(25)
    await b.tick()  # a fresh view: 5 s of a's lease left
    assert b._wait_s() == pytest.approx(5.1)

    async def unreadable() -> None:
        raise sqlite3.OperationalError("disk I/O error")  # the seam: that one query fails

    monkeypatch.setattr(b_store, "cluster_view", unreadable)
    clock.advance(1)
    await a.tick()  # a lives on and renews (to 64 s)
    clock.advance(10)
    await b.tick()  # the lease round works; the view it keeps says "expired 6 s ago"
    assert b.role == STANDBY
    assert b._wait_s() == TTL / 3  # a plain round, not 0.1 s


async def test_a_standby_that_lost_its_database_is_unhealthy_then_exits_to_reconnect(
    stores: tuple[Store, Store, FakeClock],
) -> None:
    a_store, b_store, clock = stores
    await cluster(a_store, "a", clock).tick()
    b = cluster(b_store, "b", clock)
    await b.tick()
    await b_store.close()  # its connection is gone (no reconnect inside the process)
    await b.tick()  # a failed round: still a standby, but not a healthy one
    assert b.role == STANDBY and b.failing_since is not None
    verdict = standby_verdict(b, "running", 120.0)
    assert not verdict.healthy and "database" in verdict.reason
    clock.advance(TTL - 1)
    await b.tick()
    clock.advance(1)
    with pytest.raises(LeaseLost, match="every lease round failed for 30 s"):
        await b.tick()  # exit 1: systemd restarts it with a new connection


async def test_every_request_carries_the_host_and_none_is_sent_without_the_lease(
    stores: tuple[Store, Store, FakeClock],
) -> None:
    a_store, _, clock = stores
    a = cluster(a_store, "a", clock)
    seen: list[str | None] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.headers.get("User-Agent"))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/x", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/x"
    try:
        async with make_session(5, 5, user_agent=agent_of("a"), guard=a.check) as http:
            with pytest.raises(LeaseLost):  # a standby sends nothing
                await http.get(url)
            await a.tick()
            async with http.get(url) as resp:
                assert resp.status == 200
            clock.advance(TTL)
            with pytest.raises(LeaseLost):  # past the deadline: not sent
                await http.get(url)
    finally:
        await runner.cleanup()
    assert seen == [agent_of("a")]  # one request reached the server, with the host's name
    assert agent_of("a").startswith("compliance-orchestrator/") and seen[0].endswith(" host/a")


def test_hosts_lock_their_own_file_and_one_host_id_runs_once(tmp_path: Path) -> None:
    assert lock_file_name() == "daemon.lock"
    assert lock_file_name("node-a") == "daemon.node-a.lock"
    with (StateLock(tmp_path, lock_file_name("a")), StateLock(tmp_path, lock_file_name("b")),
          pytest.raises(AlreadyRunning)):
        StateLock(tmp_path, lock_file_name("a")).acquire()


async def test_a_file_another_host_is_claiming_is_left_to_it_not_renamed_around(
    tmp_path: Path,
) -> None:
    from orchestrator.core.model import InputState, JobType
    from orchestrator.daemon.intake import Intake
    from orchestrator.files.inbox import Candidate
    from orchestrator.layout import Layout

    layout = Layout(tmp_path / "inbox", tmp_path / "outbox", tmp_path / "state")
    layout.ensure()
    inbox = layout.inbox_for(JobType.TWEETS)
    inbox.mkdir(parents=True)
    path = inbox / "f11.txt"
    path.write_text("1\n2\n")
    st = path.stat()
    clock = FakeClock()
    here = await Store.open(layout.db_path, clock, host_id="b")
    there = await Store.open(layout.db_path, clock, host_id="a")
    try:
        # Host a has recorded its claim and is about to rename the file into the spool.
        await there.insert_claiming(job_type=JobType.TWEETS, name="f11.txt", out_stem="f11",
                                    spool_name="a.spool", inode=st.st_ino, size_bytes=4)
        found = Candidate(path, JobType.TWEETS, st.st_size, st.st_mtime_ns, st.st_ino,
                          st.st_ctime_ns)
        assert await Intake(here, layout).claim(found) is None
        assert path.exists()  # left to host a: no `f11-2` claim behind its back
        rows = await here.inputs_in(list(InputState))
        assert [(r.out_stem, r.state) for r in rows] == [("f11", InputState.CLAIMING)]
    finally:
        await here.close()
        await there.close()
