"""Leader or standby: the lease loop of one host (issue 12).

Every host heartbeats into the store and tries to take the leader lease; the holder drives
X, the others stand by (they claim inputs, they never talk to X). As leader it sets the
store's fence, renews every `renew_s`, and keeps a local MONOTONIC deadline: the send time of
its last successful renewal + ttl - margin. `check()`, called before every request to X or
storage (remote/xapi.make_session's middleware), refuses to send past that deadline, so the
old leader is silent before the lease can expire in the database (a standby takes it only
then). A renewal that fails, is refused, or does not answer before the deadline ends this
host's leadership at once: `run()` raises LeaseLost, the daemon exits 1 and systemd restarts
it as a standby. A clean stop `release()`s the lease so a standby takes over at once.
A standby whose every lease round has failed for a whole TTL (its database connection is
gone: there is no reconnect inside the process) is unhealthy and then exits 1 the same way,
so that systemd restarts it with a new connection instead of leaving a standby that can never
take over.

With `enforce=False` (the SQLite backend: one host) the lease is taken and renewed the same
way, for `status` and the metrics, but never fences or refuses a request.
"""

from __future__ import annotations

import os
from typing import Final

import anyio
import structlog

from orchestrator import __version__
from orchestrator.clock import Clock
from orchestrator.core.model import ClusterView
from orchestrator.daemon.health import Verdict
from orchestrator.errors import LeaseLost
from orchestrator.store.sqlite import Store

log = structlog.get_logger(__name__)

LEADER: Final = "leader"
STANDBY: Final = "standby"
STOPPED: Final = "stopped"
MIN_WAIT_S: Final = 0.1  # a standby's shortest wait between two rounds


def user_agent(host_id: str) -> str:
    """The User-Agent of every request this host sends; tests tell hosts apart by its suffix."""
    return f"compliance-orchestrator/{__version__} host/{host_id}"


class Cluster:
    def __init__(
        self, store: Store, *, host_id: str, ttl_s: float, renew_s: float, clock: Clock,
        enforce: bool = True, margin_s: float | None = None,
    ) -> None:
        self.store = store
        self.host_id = host_id
        self.ttl_s = ttl_s
        self.renew_s = renew_s
        self.clock = clock
        self.enforce = enforce
        # Renewals run every ttl/3; stop sending a sixth of the ttl before the lease can end.
        self.margin_s = ttl_s / 6 if margin_s is None else margin_s
        self.role: str = STANDBY
        self.epoch: int | None = None
        self.deadline: float | None = None  # monotonic; only while leader
        self.became_leader = anyio.Event()
        self.beat = clock.monotonic()  # the loop's last round: the standby's watchdog pings on it
        self.failing_since: float | None = None  # monotonic: a standby's rounds fail since
        self.view: ClusterView | None = None
        self._view_at = 0.0  # monotonic time `view` was read
        self._view_fresh = False  # whether the last read of `view` succeeded

    @property
    def is_leader(self) -> bool:
        return self.role == LEADER

    def check(self) -> None:
        """Raise LeaseLost unless this host may send to X now (the request is not sent)."""
        if not self.enforce:
            return
        if self.role != LEADER or self.deadline is None:
            raise LeaseLost(f"host {self.host_id} is not the leader: it sends nothing to X")
        late = self.clock.monotonic() - self.deadline
        if late >= 0:
            raise LeaseLost(f"host {self.host_id}: the lease deadline passed {late:.1f} s ago "
                            "without a renewal; nothing more is sent to X")

    def lease_age_s(self) -> float | None:
        """Seconds since the lease was last renewed (as last read), None when nobody holds it."""
        view = self.view
        if view is None or view.lease_age_s is None:
            return None
        return view.lease_age_s + max(0.0, self.clock.monotonic() - self._view_at)

    def standbys(self) -> int:
        """Other hosts reporting as standby within the lease TTL (as last read)."""
        view = self.view
        if view is None:
            return 0
        return sum(1 for h in view.hosts if h.role == STANDBY and h.host_id != self.host_id
                   and h.last_seen is not None
                   and (view.db_now - h.last_seen).total_seconds() <= self.ttl_s)

    async def _heartbeat(self, role: str) -> None:
        await self.store.heartbeat(self.host_id, role, os.getpid(), __version__)

    async def tick(self) -> None:
        """One round: as standby, heartbeat and try to take the lease; as leader, renew it.
        LeaseLost when a leader's renewal fails, is refused, or comes too late."""
        self.beat = self.clock.monotonic()
        if self.role == LEADER:
            await self._renew()
        else:
            try:
                await self._heartbeat(STANDBY)
                epoch = await self.store.acquire_lease(self.host_id, self.ttl_s)
            except Exception as error:  # the database is away: stay standby, try next round
                self._standby_failed(error)
                return
            self.failing_since = None
            if epoch is not None:
                self._lead(epoch, sent=self.beat)
                await self._heartbeat(LEADER)
        await self._read_view()

    def _standby_failed(self, error: Exception) -> None:
        """Log a failed standby round; LeaseLost once they have failed for a whole TTL."""
        now = self.clock.monotonic()
        if self.failing_since is None:
            self.failing_since = now
        failing = now - self.failing_since
        log.warning("cluster.standby_round_failed", host=self.host_id,
                    error=type(error).__name__, error_msg=str(error)[:300],
                    failing_s=round(failing, 1))
        if self.enforce and failing >= self.ttl_s:
            log.error("cluster.standby_lost_database", host=self.host_id,
                      failing_s=round(failing, 1),
                      detail="this standby could never take over: exiting (status 1) to "
                             "restart with a new database connection")
            raise LeaseLost(f"host {self.host_id} (standby): every lease round failed for "
                            f"{failing:.0f} s ({type(error).__name__}); restarting to reconnect")

    def _lead(self, epoch: int, *, sent: float) -> None:
        self.role, self.epoch = LEADER, epoch
        self.deadline = sent + self.ttl_s - self.margin_s
        if self.enforce:
            self.store.set_fence(self.host_id, epoch)
        log.info("cluster.leader", host=self.host_id, epoch=epoch, ttl_s=self.ttl_s,
                 detail="this host now drives X")
        self.became_leader.set()

    async def _renew(self) -> None:
        assert self.epoch is not None and self.deadline is not None
        sent = self.clock.monotonic()
        left = self.deadline - sent
        why = None
        try:
            with anyio.fail_after(max(0.0, left) if self.enforce else self.ttl_s):
                renewed = await self.store.renew_lease(self.host_id, self.epoch, self.ttl_s)
                if renewed:
                    await self._heartbeat(LEADER)
        except TimeoutError:
            code = "renewal_timeout"
            why = f"the renewal did not answer before the lease deadline ({left:.1f} s)"
        except Exception as error:
            code = "renewal_failed"
            why = f"the renewal failed: {type(error).__name__}: {str(error)[:200]}"
        else:
            if renewed:
                self.deadline = sent + self.ttl_s - self.margin_s
                return
            code, why = "lease_taken", "the renewal was refused: another host holds the lease"
        self.lost(code, why)

    def lost(self, code: str, why: str) -> None:
        """This host is no longer leader: refuse every request from now on, say why, and
        raise LeaseLost (the daemon exits 1; systemd restarts it as a standby)."""
        was = self.epoch
        self.role, self.deadline = STANDBY, None
        log.error("cluster.lease_lost", host=self.host_id, epoch=was, reason=code, message=why,
                  detail="stopping all work on X at once; exiting (status 1) to restart as "
                         "a standby")
        raise LeaseLost(f"host {self.host_id} lost the leader lease (epoch {was}): {why}")

    async def _read_view(self) -> None:
        try:
            self.view = await self.store.cluster_view()
            self._view_at = self.clock.monotonic()
            self._view_fresh = True
        except Exception as error:
            # The old view stays for status and health, but no wake-up is timed by it: its
            # lease may be long expired, and a standby would wake every MIN_WAIT_S.
            self._view_fresh = False
            log.warning("cluster.view_failed", error=type(error).__name__)

    def _wait_s(self) -> float:
        if self.role == LEADER and self.deadline is not None:
            # Never sleep past the point where a renewal could still keep the deadline.
            return max(0.0, min(self.renew_s, self.deadline - self.clock.monotonic() - 0.5))
        view = self.view
        if (self.role == STANDBY and self.failing_since is None and view is not None
                and self._view_fresh
                and view.leader not in (None, self.host_id) and view.expires_at is not None):
            # A standby wakes just after the lease can expire rather than up to a round
            # later: a dead leader is replaced within the TTL of its last renewal.
            left = ((view.expires_at - view.db_now).total_seconds()
                    - (self.clock.monotonic() - self._view_at))
            return max(MIN_WAIT_S, min(self.renew_s, left + MIN_WAIT_S))
        return self.renew_s

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The first round (unless tick() ran already), started(); then a round every renew
        interval, until cancelled or the lease is lost (LeaseLost)."""
        if self.view is None:
            await self.tick()
        if not self.is_leader:
            log.info("cluster.standby", host=self.host_id, leader=self.view and self.view.leader,
                     detail="another host drives X; this one claims inputs and stands by")
        task_status.started()
        async with anyio.create_task_group() as group:
            if self.enforce:
                group.start_soon(self._watch_deadline)
            while True:
                await anyio.sleep(self._wait_s())
                await self.tick()

    async def _watch_deadline(self) -> None:
        """A renewal stuck in the database (its write is shielded) must not keep a leader
        working past its deadline: at the deadline, leadership ends, whatever the renewal."""
        while True:
            if self.role == LEADER and self.deadline is not None:
                left = self.deadline - self.clock.monotonic()
                if left <= 0:
                    self.lost("lease_expired", "no renewal succeeded before the lease deadline")
                await anyio.sleep(min(left, 1.0))
            else:
                await anyio.sleep(1.0)

    async def release(self) -> None:
        """Clean stop: give the lease up (a standby takes over at once), say so."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                if self.role == LEADER and self.epoch is not None:
                    await self.store.release_lease(self.host_id, self.epoch)
                    log.info("cluster.lease_released", host=self.host_id, epoch=self.epoch)
                self.role, self.deadline = STOPPED, None
                await self._heartbeat(STOPPED)
            except Exception as error:
                log.warning("cluster.release_failed", error=type(error).__name__)


def standby_verdict(cluster: Cluster, phase: str, stale_after_s: float) -> Verdict:
    """/healthz of a standby: healthy (ready to take over) while running and its lease loop
    is alive; it says it is a standby, and who leads."""
    age = max(0.0, cluster.clock.monotonic() - cluster.beat)
    view = cluster.view
    detail = {"phase": phase, "role": cluster.role, "host_id": cluster.host_id,
              "leader": view.leader if view is not None else None,
              "heartbeat_age_s": round(age, 1)}
    if phase != "running":
        return Verdict(False, phase, detail)
    if cluster.failing_since is not None:
        failing = max(0.0, cluster.clock.monotonic() - cluster.failing_since)
        return Verdict(False, f"standby: the database has not answered for {failing:.0f} s",
                       detail)
    if age > max(stale_after_s, 3 * cluster.renew_s):
        return Verdict(False, f"standby: the lease loop is {age:.0f} s silent", detail)
    return Verdict(True, "standby: ready to take over", detail)
