"""Composition root: build the adapters, recover, run inbox + runner under one task group.

Start-up order matters for systemd: READY=1 is sent only after migrations, the recovery
pass and the watchers are up (EXTEND_TIMEOUT_USEC covers the slow phases before it). A stop
request (SIGTERM/SIGINT) stops claiming at once, lets the steps in flight finish within a
grace period, then cancels what is left: every state change is a shielded transaction, so
an interrupted step is simply redone on the next start. SIGHUP reloads what can change live.
"""

from __future__ import annotations

import os
import random
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import anyio
import structlog

from orchestrator import __version__
from orchestrator.clock import Clock, SystemClock
from orchestrator.config import Config, load_config
from orchestrator.core.model import JobType
from orchestrator.daemon import systemd
from orchestrator.daemon.arrivals import Arrivals
from orchestrator.daemon.burst import drained
from orchestrator.daemon.cluster import Cluster, standby_verdict, user_agent
from orchestrator.daemon.health import Condition, HealthServer, Verdict, judge
from orchestrator.daemon.hooks import HookWorker, targets_of
from orchestrator.daemon.intake import Intake
from orchestrator.daemon.lanes import lanes_for
from orchestrator.daemon.lock import StateLock, lock_file_name
from orchestrator.daemon.metrics import LiveSources, Metrics
from orchestrator.daemon.monitor import Monitor, describe_batch
from orchestrator.daemon.preflight import check_folders, probe_at_start
from orchestrator.daemon.reload import plan_reload
from orchestrator.daemon.retention import Retention, run_retention
from orchestrator.daemon.runner import Runner
from orchestrator.daemon.scheduler import Scheduler
from orchestrator.daemon.settings import packing_of, policy_of, settings_of
from orchestrator.errors import ConfigError
from orchestrator.files.atomic import cleanup_temp_files, owner_tag, set_temp_owner
from orchestrator.files.inbox import Candidate, InboxScanner, InvalidEntry
from orchestrator.files.watch import watch_inbox
from orchestrator.layout import Layout
from orchestrator.logs import LEVELS, set_level
from orchestrator.remote.xapi import XApi, make_session
from orchestrator.store.opening import open_configured_store
from orchestrator.store.sqlite import Store
from orchestrator.wakeup import Wakeup

log = structlog.get_logger(__name__)

FINAL_WRITES_S = 10.0  # after the grace: cancelled steps, shielded last writes, closing
START_PHASE_S = 300.0  # EXTEND_TIMEOUT_USEC per start-up phase (migrations, recovery)
SHARED_TEMP_MIN_AGE_S = 3600.0  # a shared folder's temp file this old has no writer left
# A lane beats at least every few seconds when idle or waiting, and with every MiB a transfer
# moves; a socket read gives up after api.read_timeout_s. Silence much longer than that is a
# stuck lane, not a slow one.
MIN_STALE_AFTER_S = 120.0
# Shared store: a `claiming` row this old was left by a host that died mid-claim (a claim is
# a rename on the shared filesystem: milliseconds), so any host may finish or undo it.
CLAIM_GRACE_S = 120.0


class Service:
    """The daemon, started with `run()`; `stop()` asks it to finish cleanly (a second call
    skips the rest of the grace period); `reload()` takes over live config changes.
    `run(until_idle=True)` is burst mode: it stops by itself once the queue is drained."""

    def __init__(
        self,
        config: Config,
        token: str,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        stop_grace_s: float | None = None,
        stale_after_s: float | None = None,
        notifier: systemd.Notifier | None = None,
    ) -> None:
        self.config = config
        self.token = token
        self.clock = clock or SystemClock()
        self.rng = rng
        self.stop_grace_s = (
            config.service.stop_grace_s if stop_grace_s is None else stop_grace_s
        )
        self.stale_after_s = stale_after_s or config.service.stale_after_s or max(
            MIN_STALE_AFTER_S, 2 * config.api.read_timeout_s
        )
        self.notifier = notifier or systemd.Notifier()
        self.layout = Layout.from_config(config)
        self.metrics = Metrics()  # per Service: tests running several never share counters
        self.runner: Runner | None = None
        self.hooks: HookWorker | None = None
        self.store: Store | None = None
        self.host_id = config.service.host
        self.cluster: Cluster | None = None
        self._runner_started = False  # a standby's runner starts when it is elected
        self._running = anyio.Event()
        self.monitor: Monitor | None = None
        self.health_port: int | None = None  # bound port of /healthz and /metrics
        self.phase = "starting"  # -> "running" -> "stopping"
        self._stop = anyio.Event()
        self._hurry = anyio.Event()
        self._changed = Wakeup()  # a state change: burst mode looks whether all is done

    def stop(self) -> None:
        if self._stop.is_set():
            self._hurry.set()
        self._stop.set()

    def verdict(self) -> Verdict:
        """What /healthz answers."""
        runner = self.runner
        conditions = []
        if runner is not None:
            incidents = runner.activity.incidents
            conditions = [
                Condition(name, incidents.age_s(i), i.failures, i.last_error, i.last_error_msg)
                for name, i in incidents.conditions().items()
            ]
        cluster = self.cluster
        if cluster is not None and not cluster.is_leader:
            return standby_verdict(cluster, self.phase, self.stale_after_s)
        verdict = judge(
            phase=self.phase if runner is not None else "starting",
            heartbeat_age_s=runner.activity.heartbeat_age_s() if runner is not None else 0.0,
            stale_after_s=self.stale_after_s,
            paused=runner is not None and runner.auth_paused,
            conditions=conditions,
            unhealthy_after_s=self.config.health.unhealthy_after_s,
        )
        if cluster is not None:
            verdict.detail.update(role=cluster.role, host_id=cluster.host_id)
        return verdict

    def _poke(self) -> None:
        self._changed.notify()
        if self.monitor is not None:
            self.monitor.poke()

    async def until_idle(self) -> None:
        """Return once the queue is drained: the inbox holds nothing to claim or reject, every
        input and batch is final and the spool is empty. Looked at after every state change
        (and each rescan interval, for changes nobody announces); work that cannot finish
        (a paused token, an outbox that refuses writes) keeps it waiting, so callers bound it.
        """
        while not (self.phase == "running" and self.store is not None
                   and await drained(self.store, self.layout)):
            await self._changed.wait(self.config.inbox.rescan_interval_s)

    async def run(
        self,
        *,
        on_ready: Callable[[], Awaitable[None] | None] | None = None,
        until_idle: bool = False,
    ) -> None:
        config, layout = self.config, self.layout
        check_folders(config)  # ConfigError: exit 2, before anything is created
        for folder, error in layout.ensure():
            log.warning("outbox.folder_unusable", folder=str(folder), error=type(error).__name__,
                        error_msg=str(error))
        # One daemon per state directory; with a shared store, one per host_id (lock.py).
        lock = lock_file_name(self.host_id if config.store.shared else None)
        with StateLock(layout.state_dir, lock):
            log.info("service.starting", version=__version__, host_id=self.host_id,
                     **config.for_logging())
            self.notifier.extend_timeout(START_PHASE_S)  # migrations may copy the database
            store = await open_configured_store(config, layout, self.clock,
                                                host_id=self.host_id)
            store.hook_targets = targets_of(config)  # intent rows written with each move
            self.store = store
            try:
                await self._serve(store, on_ready, until_idle)
            finally:
                with anyio.CancelScope(shield=True):
                    await store.close()
        log.info("service.stopped")

    async def _serve(
        self,
        store: Store,
        on_ready: Callable[[], Awaitable[None] | None] | None,
        until_idle: bool = False,
    ) -> None:
        config, layout = self.config, self.layout
        self.notifier.extend_timeout(START_PHASE_S)  # recovery may validate claimed files
        # Temp files of writes that a crash interrupted (outbox and spool alike). On a shared
        # store the folders are shared too: another host may be writing its temp files right
        # now (a restarted host removed the leader's, whose renames then failed). So temp
        # names carry this host's tag, and only this host's leftovers go at once; another
        # host's only once untouched for an hour.
        set_temp_owner(layout.host_id)
        min_age_s = SHARED_TEMP_MIN_AGE_S if layout.host_id is not None else 0.0
        own_tag = owner_tag(layout.host_id) if layout.host_id is not None else None
        for folder in (layout.rejected, layout.spool, *map(layout.outbox_for, JobType)):
            try:
                removed = cleanup_temp_files(folder, min_age_s=min_age_s, clock=self.clock,
                                             own_tag=own_tag)
            except OSError:
                continue  # an unusable outbox folder was reported above; deliveries wait
            if removed:
                log.info("outbox.temp_removed", folder=folder.name, count=removed)
        wakeup = Wakeup()

        def queued() -> None:
            wakeup.notify()
            self._poke()

        intake = Intake(
            store, layout, invalid_lines=config.inbox.invalid_lines,
            duplicate_content=config.inbox.duplicate_content,
            link_max_age_s=config.inbox.link_max_age_s, on_queued=queued,
            max_input_bytes=config.inbox.max_input_bytes,
            min_free_bytes=config.inbox.min_free_bytes, settle_s=config.inbox.min_age_s,
            formats={JobType.TWEETS: config.inbox.tweets_format,
                     JobType.USERS: config.inbox.users_format},
            id_column=config.inbox.id_column, on_rejected=self.metrics.input_rejected,
        )
        # Shared store: another live host may be mid-claim; only claims it left long ago heal.
        await intake.recover(claims_before=self._claim_grace_cutoff())
        # A burst's pack waits for the files of the claim pass in progress (scheduler.py).
        arrivals = Arrivals(on_settled=wakeup.notify)
        cluster = self.cluster = Cluster(
            store, host_id=self.host_id, ttl_s=config.store.lease_ttl_s,
            renew_s=config.store.renew_interval_s, clock=self.clock,
            enforce=config.store.shared,
        )
        async with make_session(config.api.connect_timeout_s, config.api.read_timeout_s,
                                user_agent=user_agent(self.host_id),
                                guard=cluster.check) as http:
            xapi = XApi(
                http, config.api.base_url, self.token, clock=self.clock,
                on_request=self.metrics.api_request,
            )
            await cluster.tick()  # the first round: leader or standby
            if cluster.is_leader:  # a standby sends nothing to X (once elected, its runner
                await probe_at_start(xapi, config.api.connect_timeout_s)  # as a leader's does)
            runner = Runner(
                store=store,
                xapi=xapi,
                session=http,
                layout=layout,
                intake=intake,
                scheduler=Scheduler(store, layout, packing_of(config), arrivals),
                policy=policy_of(config),
                settings=settings_of(config),
                lanes=lanes_for(config.jobs.concurrency),
                wakeup=wakeup,
                rng=self.rng,
                metrics=self.metrics,
                on_change=self._poke,
            )
            self.runner = runner
            monitor = Monitor(
                store, runner.activity, self.metrics, self.notifier,
                paused=lambda: runner.auth_paused,
            )
            self.monitor = monitor
            self.metrics.watch(LiveSources(
                rate_limits=xapi.budget.snapshot,
                deadlines=runner.activity.deadlines,
                heartbeat_age_s=runner.activity.heartbeat_age_s,
                auth_paused=lambda: runner.auth_paused,
                in_hand=lambda: runner.current.values(),
                leader=lambda: cluster.is_leader,
                lease_age_s=cluster.lease_age_s,
                standbys=cluster.standbys if config.store.shared else None,
            ))
            scanner = InboxScanner(
                layout.inbox, min_age_s=config.inbox.min_age_s, clock=self.clock,
                stale_part_warn_s=config.inbox.stale_part_warn_s,
            )
            inbox_done = anyio.Event()

            async def claim(candidate: Candidate) -> None:
                try:
                    await intake.claim(candidate)
                finally:
                    arrivals.done(candidate)
                    self._changed.notify()

            async def reject_entry(entry: InvalidEntry) -> None:
                try:
                    await intake.reject_entry(entry)
                finally:
                    self._changed.notify()

            async def inbox(*, task_status: anyio.abc.TaskStatus[None]) -> None:
                await watch_inbox(
                    scanner, claim, reject_entry,
                    rescan_interval_s=config.inbox.rescan_interval_s,
                    use_watcher=config.inbox.use_watcher, stop_event=self._stop,
                    on_scan=arrivals.scanned, task_status=task_status,
                )
                inbox_done.set()

            async with anyio.create_task_group() as group:
                if config.health.enabled:
                    health = HealthServer(
                        config.health.host, config.health.port, self.verdict, self.metrics
                    )
                    await group.start(health.run)
                    self.health_port = health.port
                hooks = None
                if config.hooks or config.webhooks:  # beside the lanes, never in them
                    hooks = HookWorker(store, layout, config, session=http, clock=self.clock,
                                       on_outcome=self.metrics.hook_run,
                                       on_pending=self.metrics.hook_runs_pending.set)
                    self.hooks = hooks
                await group.start(cluster.run)
                if cluster.is_leader:
                    self._runner_started = True
                    if hooks is not None:  # only the leader runs hooks: one host per run
                        await group.start(hooks.run)
                    await group.start(runner.run)
                else:
                    group.start_soon(self._lead_when_elected, cluster, runner, hooks)
                await group.start(inbox)
                group.start_soon(self._maintain, intake)
                keep_twins = (config.inbox.link_max_age_s
                              if config.inbox.duplicate_content == "link" else 0.0)
                group.start_soon(run_retention, store, layout, self.clock,
                                 Retention.of(config.retention, keep_inputs_s=keep_twins))
                await monitor.refresh_queue()
                self.phase = "running"
                self._running.set()
                self.notifier.ready(monitor.text())
                await group.start(monitor.run)
                interval = systemd.watchdog_interval_s()
                if interval is not None:
                    watchdog = systemd.Watchdog(
                        self.notifier, interval_s=interval, stale_s=self.stale_after_s,
                        heartbeat=lambda: runner.heartbeat if cluster.is_leader
                        else cluster.beat, clock=self.clock,
                    )
                    await group.start(watchdog.run)
                log.info("service.ready", lanes=len(runner.lanes), pid=os.getpid(),
                         health_port=self.health_port, watchdog_interval_s=interval)
                if on_ready is not None:
                    maybe = on_ready()
                    if maybe is not None:
                        await maybe
                if until_idle:
                    group.start_soon(self._stop_when_idle)
                await self._stop.wait()
                await self._drain(runner, monitor, inbox_done)
                await cluster.release()  # a standby takes over at once
                group.cancel_scope.cancel()

    async def _drain(self, runner: Runner, monitor: Monitor, inbox_done: anyio.Event) -> None:
        """Claim nothing more, start no new step, give the steps in flight the grace period."""
        self.phase = "stopping"
        grace = self.stop_grace_s
        busy = [describe_batch(batch) for batch in runner.current.values()]
        log.info("service.stopping", grace_s=grace, busy=busy)
        monitor.stopping = True
        self.notifier.stopping(monitor.text())
        self.notifier.extend_timeout(grace + FINAL_WRITES_S)
        runner.stop()  # the inbox watcher saw the same stop event
        with anyio.move_on_after(grace):
            async with anyio.create_task_group() as race:

                async def settled() -> None:
                    if self._runner_started:
                        await runner.stopped.wait()
                    await inbox_done.wait()
                    race.cancel_scope.cancel()

                async def hurried() -> None:
                    await self._hurry.wait()
                    race.cancel_scope.cancel()

                race.start_soon(settled)
                race.start_soon(hurried)
        if runner.stopped.is_set() or not self._runner_started:
            log.info("service.drained")
        else:
            busy = [describe_batch(batch) for batch in runner.current.values()]
            log.warning("service.grace_over", grace_s=grace, hurried=self._hurry.is_set(),
                        cancelled=busy)

    async def _lead_when_elected(self, cluster: Cluster, runner: Runner,
                                 hooks: HookWorker | None) -> None:
        """A standby's runner (and hook worker) starts once the lease is this host's: it
        adopts the in-flight job by name and resumes its upload or download, as a restarted
        daemon does, and reruns hook runs a dead leader left running."""
        await cluster.became_leader.wait()
        await self._running.wait()  # elected during start-up: lead once it is up
        if self.phase == "running":
            self._runner_started = True
            async with anyio.create_task_group() as group:
                if hooks is not None:
                    group.start_soon(hooks.run)
                group.start_soon(runner.run)

    def _claim_grace_cutoff(self) -> datetime | None:
        if not self.config.store.shared:
            return None  # one host: every claim in progress at start is this host's, dead
        return self.clock.now() - timedelta(seconds=CLAIM_GRACE_S)

    async def _stop_when_idle(self) -> None:
        await self.until_idle()
        log.info("service.idle", detail="the queue is drained; stopping (burst mode)")
        self.stop()

    async def _maintain(self, intake: Intake) -> None:
        while True:
            await anyio.sleep(self.config.inbox.rescan_interval_s)
            await intake.maintenance(claims_before=self._claim_grace_cutoff())
            self._changed.notify()

    async def reload(self) -> None:
        """SIGHUP: re-read the config file; apply the live settings, name the others."""
        self.notifier.reloading()
        try:
            source = self.config.source
            if source is None:
                raise ConfigError("the config was not read from a file")
            new = await anyio.to_thread.run_sync(load_config, source)
        except ConfigError as error:
            log.error("service.reload_failed", error=type(error).__name__, error_msg=str(error))
            self.notifier.reloaded()
            return
        plan = plan_reload(self.config, new)
        old_level, new_level = self.config.log.level, plan.config.log.level
        louder = LEVELS[new_level] < LEVELS[old_level]
        if louder:
            set_level(new_level)
        self.config = plan.config
        runner = self.runner
        if runner is not None:
            runner.policy = policy_of(plan.config)
            runner.settings = settings_of(plan.config)
            runner.activity.download_warn_lead_s = plan.config.jobs.download_warn_lead_s
        log.info("service.reloaded", changed=sorted(plan.applied), values=plan.applied,
                 needs_restart=plan.needs_restart)
        if plan.needs_restart:
            log.warning("service.reload_needs_restart", keys=plan.needs_restart,
                        detail="these settings take effect at the next start")
        if not louder:
            set_level(new_level)
        self.notifier.reloaded()
