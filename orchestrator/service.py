"""Composition root: build the adapters, recover, run inbox + runner under one task group.

Start-up order matters for systemd: READY=1 is sent only after migrations, the recovery
pass and the watchers are up. A stop request cancels the task group; every state change is
a shielded transaction, so whatever step was in flight is redone on the next start.
"""

from __future__ import annotations

import argparse
import functools
import random
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import structlog

from orchestrator import __version__, systemd
from orchestrator.clock import Clock, SystemClock
from orchestrator.config import Config, load_bearer_token, load_config
from orchestrator.errors import ConfigError
from orchestrator.inbox import InboxScanner, watch_inbox
from orchestrator.intake import Intake
from orchestrator.layout import Layout
from orchestrator.lock import StateLock
from orchestrator.logs import configure_logging
from orchestrator.machine import Policy
from orchestrator.model import JobType
from orchestrator.outbox import cleanup_temp_files
from orchestrator.retry import RetryPolicy
from orchestrator.runner import Runner, RunnerSettings, Wakeup, lanes_for
from orchestrator.scheduler import PackingLimits, Scheduler
from orchestrator.store import Store
from orchestrator.xapi import XApi, make_session

log = structlog.get_logger(__name__)


def layout_of(config: Config) -> Layout:
    return Layout(config.paths.inbox, config.paths.outbox, config.paths.state_dir)


def policy_of(config: Config) -> Policy:
    jobs, poll = config.jobs, config.poll
    return Policy(
        max_attempts=jobs.max_attempts,
        upload_margin_s=jobs.upload_margin_s,
        download_margin_s=jobs.download_margin_s,
        poll_initial_s=poll.initial_interval_s,
        poll_max_s=poll.max_interval_s,
        poll_factor=poll.backoff_factor,
        retry=RetryPolicy(
            max_stage_retries=jobs.max_stage_retries,
            backoff_initial_s=jobs.backoff_initial_s,
            backoff_max_s=jobs.backoff_max_s,
        ),
    )


def packing_of(config: Config) -> PackingLimits:
    jobs = config.jobs
    return PackingLimits(
        max_ids_per_job=jobs.max_ids_per_job,
        max_bytes_per_job=jobs.max_bytes_per_job,
        pack_wait_s=jobs.pack_wait_s,
        enabled=jobs.pack_files,
    )


class Service:
    """The daemon, started with `run()`; `stop()` asks it to finish cleanly."""

    def __init__(
        self,
        config: Config,
        token: str,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.token = token
        self.clock = clock or SystemClock()
        self.rng = rng
        self.layout = layout_of(config)
        self.runner: Runner | None = None
        self.store: Store | None = None
        self._stop = anyio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self, *, on_ready: Callable[[], Awaitable[None] | None] | None = None) -> None:
        config, layout = self.config, self.layout
        layout.ensure()
        with StateLock(layout.state_dir):
            log.info("service.starting", version=__version__, **config.for_logging())
            store = await Store.open(layout.db_path, self.clock, backup_dir=layout.backups)
            self.store = store
            try:
                await self._serve(store, on_ready)
            finally:
                with anyio.CancelScope(shield=True):
                    await store.close()
        log.info("service.stopped")

    async def _serve(
        self, store: Store, on_ready: Callable[[], Awaitable[None] | None] | None
    ) -> None:
        config, layout = self.config, self.layout
        # Temp files of writes that a crash interrupted (outbox and spool alike).
        for folder in (layout.rejected, layout.spool, *map(layout.outbox_for, JobType)):
            removed = cleanup_temp_files(folder)
            if removed:
                log.info("outbox.temp_removed", folder=folder.name, count=removed)
        wakeup = Wakeup()
        intake = Intake(
            store, layout, invalid_lines=config.inbox.invalid_lines, on_queued=wakeup.notify
        )
        await intake.recover()
        async with make_session(config.api.connect_timeout_s, config.api.read_timeout_s) as http:
            xapi = XApi(http, config.api.base_url, self.token)
            runner = Runner(
                store=store,
                xapi=xapi,
                session=http,
                layout=layout,
                intake=intake,
                scheduler=Scheduler(store, layout, packing_of(config)),
                policy=policy_of(config),
                settings=RunnerSettings(
                    resumable_threshold_bytes=config.jobs.resumable_threshold_bytes,
                    upload_chunk_bytes=config.jobs.upload_chunk_bytes,
                    rate_reserve=config.poll.rate_reserve,
                ),
                lanes=lanes_for(config.jobs.concurrency),
                wakeup=wakeup,
                rng=self.rng,
            )
            self.runner = runner
            scanner = InboxScanner(layout.inbox, min_age_s=config.inbox.min_age_s)
            async with anyio.create_task_group() as group:
                await group.start(runner.run)
                await group.start(
                    functools.partial(
                        watch_inbox,
                        scanner,
                        intake.claim,
                        intake.reject_entry,
                        rescan_interval_s=config.inbox.rescan_interval_s,
                        use_watcher=config.inbox.use_watcher,
                        stop_event=self._stop,
                    )
                )
                group.start_soon(self._maintain, intake)
                systemd.notify("READY=1\nSTATUS=running")
                log.info("service.ready", lanes=len(runner.lanes))
                if on_ready is not None:
                    maybe = on_ready()
                    if maybe is not None:
                        await maybe
                await self._stop.wait()
                log.info("service.stopping")
                systemd.notify("STOPPING=1")
                wakeup.notify()
                group.cancel_scope.cancel()


    async def _maintain(self, intake: Intake) -> None:
        while True:
            await anyio.sleep(self.config.inbox.rescan_interval_s)
            await intake.maintenance()


async def _run_until_signal(service: Service) -> None:
    async with anyio.create_task_group() as group:

        async def watch_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for received in signals:
                    log.info("service.signal", signal=signal.Signals(received).name)
                    service.stop()
                    return

        group.start_soon(watch_signals)
        await service.run()
        group.cancel_scope.cancel()


def run_command(args: argparse.Namespace) -> int:
    config_path: Path = args.config
    try:
        config = load_config(config_path)
        token = load_bearer_token(config)
    except ConfigError as error:
        print(f"compliance-orchestrator: {error}", file=sys.stderr)
        return 2
    configure_logging(config.log.level, config.log.format, secrets=(token,))
    try:
        anyio.run(_run_until_signal, Service(config, token))
    except Exception as error:
        config_error = _config_error_in(error)
        if config_error is not None:  # e.g. the state directory is locked, schema too new
            log.error("service.config_error", error=type(config_error).__name__,
                      error_msg=str(config_error))
            print(f"compliance-orchestrator: {config_error}", file=sys.stderr)
            return 2
        log.exception("service.crashed", error=type(error).__name__)
        return 1
    return 0


def _config_error_in(error: BaseException) -> ConfigError | None:
    """Task groups wrap errors in exception groups; find a ConfigError inside."""
    if isinstance(error, ConfigError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _config_error_in(inner)
            if found is not None:
                return found
    return None
