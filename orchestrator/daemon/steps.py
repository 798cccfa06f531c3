"""What each remote step does: create the X job, upload the body, poll, download, deliver.

Mixed into Runner (runner.py), which plans the step and persists the observation returned
here. Every remote call first waits for the rate budget (`_respect_budget`); a step that
must persist before its next remote call (a resumable upload session) does so through
Runner._persist, so a restart continues instead of starting over.
"""

from __future__ import annotations

import functools
import json
import random
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import aiohttp
import anyio
import structlog

from orchestrator.clock import Clock
from orchestrator.core import machine
from orchestrator.core.decision import Decision
from orchestrator.core.machine import Policy
from orchestrator.core.model import Batch, RemoteStatus
from orchestrator.daemon.activity import Activity
from orchestrator.daemon.deliver import deliver_batch
from orchestrator.daemon.lanes import RunnerSettings
from orchestrator.daemon.scheduler import upload_body
from orchestrator.errors import IntegrityError, RemoteJobEnded, UploadSessionGone
from orchestrator.files.atomic import atomic_write_file
from orchestrator.files.results import ResultStream
from orchestrator.layout import Layout
from orchestrator.remote.download import download
from orchestrator.remote.upload import (
    Body,
    start_resumable,
    upload_resumable,
    upload_simple,
)
from orchestrator.remote.xapi import XApi
from orchestrator.store.sqlite import Store
from orchestrator.wakeup import Wakeup

log = structlog.get_logger(__name__)


# The lane a task runs (each lane is its own task), so that deep waits can beat its heart.
LANE: ContextVar[int | None] = ContextVar("orchestrator_lane", default=None)


class Stopping(Exception):
    """The runner is stopping: abandon this step before its next remote call."""


class StepActions:
    """The remote half of Runner: its attributes are set by Runner.__init__."""

    store: Store
    xapi: XApi
    session: aiohttp.ClientSession
    layout: Layout
    policy: Policy
    settings: RunnerSettings
    wakeup: Wakeup
    rng: random.Random
    clock: Clock
    activity: Activity
    _stopping: bool
    _affected: dict[int, int]
    _fresh_intents: set[tuple[int, int]]
    _verified_uploads: set[tuple[int, int]]

    if TYPE_CHECKING:
        async def _persist(
            self, batch: Batch, decision: Decision,
            observation: machine.Observation | None = None,
        ) -> Batch: ...

    def now(self) -> datetime:
        return self.store.clock.now()

    def _beat(self) -> None:
        lane = LANE.get()
        if lane is not None:
            self.activity.beat(lane)

    async def _pause(self, seconds: float) -> None:
        """Let `seconds` of the clock's time pass, beating; ends early when stopping."""
        until = self.now() + timedelta(seconds=seconds)
        while not self._stopping and (left := (until - self.now()).total_seconds()) > 0:
            await self._sleep(left)
            self._beat()

    async def _sleep(self, seconds: float) -> bool:
        """Up to `seconds` on the clock (Clock.sleep: a test clock skips ahead), at most
        max_sleep_s of real time (so an operator's `retry`/`cancel` from another process is
        seen soon), less when woken. True when woken."""
        return await self.wakeup.wait(
            seconds, clock=self.clock, real_cap_s=self.settings.max_sleep_s
        )

    async def _respect_budget(self, endpoint: str) -> None:
        delay = self.xapi.budget.wait_before(
            endpoint, self.clock.now().timestamp(), reserve=self.settings.rate_reserve
        )
        if delay > 0:
            log.warning(
                "xapi.rate_wait",
                endpoint=endpoint,
                wait_s=round(delay, 1),
                resume_at=(self.clock.now() + timedelta(seconds=delay)).isoformat(),
            )
            await self._pause(delay)  # a deliberate wait: the lane stays alive
        if self._stopping:
            raise Stopping

    async def _create(self, batch: Batch, name: str) -> machine.Observation:
        if (batch.id, batch.attempt) not in self._fresh_intents:
            # We may have sent this POST before a crash or a lost response: adopt, don't dup.
            await self._respect_budget("list")
            existing = await self.xapi.find_job_by_name(batch.job_type, name)
            if existing is not None:
                return machine.JobCreated(existing, adopted=True)
        await self._respect_budget("create")
        resumable = batch.upload_bytes >= self.settings.resumable_threshold_bytes
        self._fresh_intents.discard((batch.id, batch.attempt))  # from now on: maybe sent
        job = await self.xapi.create_job(batch.job_type, name=name, resumable=resumable)
        self._verified_uploads.add((batch.id, batch.attempt))
        return machine.JobCreated(job)

    async def _upload(self, batch: Batch) -> machine.Observation:
        assert batch.upload_url is not None and batch.x_job_id is not None
        upload_url = batch.upload_url
        if (batch.id, batch.attempt) not in self._verified_uploads:
            # After a restart the upload may already have gone through.
            await self._respect_budget("get")
            remote = await self.xapi.get_job(batch.x_job_id)
            self._verified_uploads.add((batch.id, batch.attempt))
            if remote.status in (RemoteStatus.IN_PROGRESS, RemoteStatus.COMPLETE):
                return machine.UploadFinished()
            if remote.status in (RemoteStatus.FAILED, RemoteStatus.EXPIRED):
                raise RemoteJobEnded(f"remote job is {remote.status} before the upload")
        body = await upload_body(self.store, self.layout, batch)
        started = self.clock.monotonic()
        if batch.resumable:
            session_url = batch.upload_session_url
            if session_url is not None:
                try:
                    await self._send_resumable(session_url, body, batch)
                except UploadSessionGone:
                    log.warning("upload.session_gone", x_job_id=batch.x_job_id)
                    session_url = None
            if session_url is None:
                # Persist the session before sending bytes so a restart continues it.
                with self.activity.metrics.storage_request("upload"):
                    session_url = await start_resumable(self.session, upload_url, clock=self.clock)
                observation = machine.UploadSessionStarted(session_url)
                decision = machine.decide(batch, observation, self.now(), self.policy, self.rng)
                batch = await self._persist(batch, decision)
                await self._send_resumable(session_url, body, batch)
        else:
            meter = self.activity.meter(batch, "upload", baseline=0, resumed_bytes_count=False)
            with self.activity.metrics.storage_request("upload"):
                await upload_simple(
                    self.session, upload_url, body, progress=meter, clock=self.clock
                )
        log.debug(
            "upload.transferred",
            bytes=batch.upload_bytes,
            duration_ms=int((self.clock.monotonic() - started) * 1000),
        )
        return machine.UploadFinished()

    async def _send_resumable(self, session_url: str, body: Body, batch: Batch) -> None:
        # The first progress call reports what the storage already holds: not sent now.
        meter = self.activity.meter(batch, "upload", baseline=None, resumed_bytes_count=False)
        with self.activity.metrics.storage_request("upload"):
            await upload_resumable(
                self.session, session_url, body, chunk_bytes=self.settings.upload_chunk_bytes,
                progress=meter, clock=self.clock,
            )

    async def _download(self, batch: Batch) -> machine.Observation:
        assert batch.download_url is not None
        files = self.layout.batch_files(batch.id)
        started = self.clock.monotonic()
        partial = files.raw.stat().st_size if files.raw.exists() else 0
        meter = self.activity.meter(batch, "download", baseline=partial, resumed_bytes_count=True)
        # Normalised as it arrives (one pass: crc32c, check, count, hash, write); placed only
        # once the download's length and crc32c are checked.
        stream = ResultStream(files.results, self.activity.pulse(LANE.get()))
        try:
            with self.activity.metrics.storage_request("download"):
                report = await download(
                    self.session, batch.download_url, files.raw, progress=meter,
                    clock=self.clock, sink=stream,
                )
            results = await anyio.to_thread.run_sync(stream.finish)
        except IntegrityError:
            stream.abort()
            files.raw.unlink(missing_ok=True)
            files.results.unlink(missing_ok=True)
            raise
        finally:
            stream.abort()  # a no-op once finished
        # Kept for delivery, which then need not parse and hash the results again.
        report_json = json.dumps({"affected": results.affected, "by_reason": results.by_reason,
                                  "output_sha256": results.output_sha256})
        await anyio.to_thread.run_sync(
            functools.partial(atomic_write_file, files.report, data=report_json.encode())
        )
        files.raw.unlink(missing_ok=True)
        self._affected[batch.id] = results.affected
        log.info(
            "download.transferred",
            bytes=report.bytes,
            affected=results.affected,
            crc32c_checked=report.crc32c_checked,
            resumed_from=report.resumed_from,
            duration_ms=int((self.clock.monotonic() - started) * 1000),
        )
        return machine.Downloaded(results.affected)

    async def _deliver(self, batch: Batch) -> machine.Observation:
        summaries = await deliver_batch(
            self.store, self.layout, batch, progress=self.activity.pulse(LANE.get()),
            compliant_copy=self.settings.compliant_copy,
        )
        for summary in summaries:
            if summary.pop("pending", False):
                log.info("input.part_done", **summary)
            else:
                log.info("outbox.delivered", **summary)
        return machine.DeliveredAll()
