"""The one-job-at-a-time loop: load -> plan -> act -> decide -> persist.

A *lane* runs one batch at a time. With `concurrency = "global"` there is one lane for both
job types (X: "You can run one batch job at a time"); with `"per-type"` one lane per type.
Intent is persisted before every remote side effect (QUEUED -> CREATING with the job name
before the POST) and results right after, so a restart resumes from the database alone.
The steps' remote actions are in steps.py.
"""

from __future__ import annotations

import errno
import random
from collections.abc import Callable, Sequence
from datetime import datetime

import aiohttp
import anyio
import structlog

from orchestrator.core import machine, polling
from orchestrator.core.decision import Decision
from orchestrator.core.machine import Policy
from orchestrator.core.model import Batch, BatchState, JobType
from orchestrator.core.polling import Estimate
from orchestrator.daemon.activity import Activity
from orchestrator.daemon.deliver import cleanup_after
from orchestrator.daemon.intake import Intake
from orchestrator.daemon.lanes import RunnerSettings
from orchestrator.daemon.metrics import Metrics
from orchestrator.daemon.scheduler import PAUSE_RECHECK_S, Scheduler
from orchestrator.daemon.steps import LANE, StepActions, Stopping
from orchestrator.errors import LeaseLost, OrchestratorError
from orchestrator.layout import Layout
from orchestrator.logs import file_fields
from orchestrator.redact import redact_text
from orchestrator.remote.xapi import XApi
from orchestrator.store.opening import DATABASE_ERRORS
from orchestrator.store.sqlite import StaleState, Store
from orchestrator.wakeup import Wakeup

log = structlog.get_logger(__name__)
# A full disk while building a pack body, the database busy or unreachable: wait, retry.
_SCHEDULE_ERRORS: tuple[type[Exception], ...] = (OSError, *DATABASE_ERRORS)


class Runner(StepActions):
    def __init__(
        self,
        *,
        store: Store,
        xapi: XApi,
        session: aiohttp.ClientSession,
        layout: Layout,
        intake: Intake,
        scheduler: Scheduler,
        policy: Policy,
        settings: RunnerSettings,
        lanes: Sequence[Sequence[JobType]],
        wakeup: Wakeup,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.xapi = xapi
        self.session = session
        self.layout = layout
        self.intake = intake
        self.scheduler = scheduler
        self.policy = policy
        self.settings = settings
        self.lanes = [tuple(lane) for lane in lanes]
        self.wakeup = wakeup
        self.rng = rng or random.Random()
        self.clock = store.clock
        self.metrics = metrics if metrics is not None else Metrics()
        self.activity = Activity(
            len(self.lanes), self.metrics, clock=store.clock,
            on_change=on_change, download_warn_lead_s=settings.download_warn_lead_s,
        )
        self.stopped = anyio.Event()  # every lane has returned after stop()
        self._stopping = False
        self._affected: dict[int, int] = {}  # batch id -> affected IDs, for job.finished
        self._fresh_intents: set[tuple[int, int]] = set()  # (batch id, attempt) POST not yet sent
        self._verified_uploads: set[tuple[int, int]] = set()
        self._auth_reported = False
        self._files: dict[int, dict[str, object]] = {}  # batch id -> its files, for log lines

    @property
    def heartbeat(self) -> float:
        """store.clock.monotonic() of the least recent progress of any lane."""
        return self.activity.heartbeat

    @property
    def current(self) -> dict[int, Batch]:
        """Lane index -> batch in hand."""
        return self.activity.current()

    @property
    def auth_paused(self) -> bool:
        """The X API refused the credentials; work waits until the token works."""
        return self._auth_reported

    def stop(self) -> None:
        """Start no new step; steps in flight run on until they persist their outcome."""
        self._stopping = True
        self.wakeup.notify()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        async with anyio.create_task_group() as group:
            for index, lane in enumerate(self.lanes):
                group.start_soon(self._lane, index, lane)
            task_status.started()
        self.stopped.set()

    # ---- lanes --------------------------------------------------------------------------

    async def _lane(self, index: int, job_types: tuple[JobType, ...]) -> None:
        LANE.set(index)
        while not self._stopping:
            self.activity.beat(index)
            try:
                batch = await self.scheduler.next_batch(job_types)
            except _SCHEDULE_ERRORS as error:
                # Disk full while building a pack body, the database busy past its timeout:
                # wait and look again rather than take the whole daemon down.
                wait_s = min(30.0, self.policy.retry.backoff_max_s)
                if isinstance(error, OSError):
                    self.activity.incidents.local_failed(error)
                log.warning("runner.schedule_failed", error=type(error).__name__,
                            error_msg=redact_text(str(error)),
                            path=getattr(error, "filename", None), retry_in_s=wait_s)
                await self._pause(wait_s)
                continue
            if batch is None:
                self.activity.hold(index, None)
                if self._stopping:
                    break  # the wakeup may have gone to another lane meanwhile
                await self.wakeup.wait(self.scheduler.idle_wait_s(self.settings.idle_check_s))
                continue
            if self._stopping:
                break  # formed but not started: the next start picks it up
            self.activity.hold(index, batch)
            with structlog.contextvars.bound_contextvars(
                batch_id=batch.id, job_type=str(batch.job_type), **await self._files_of(batch)
            ):
                self.activity.warn_if_results_expire_soon(batch)
                try:
                    await self.step(batch)
                except Stopping:
                    break
                except LeaseLost:
                    raise  # this host no longer leads: the whole daemon stops (cluster.py)
                except Exception as error:
                    # A bug must not take the whole daemon down in a restart loop: say so
                    # loudly, keep the state as it is, and try again later.
                    log.exception(
                        "runner.step_crashed", error=type(error).__name__, state=str(batch.state)
                    )
                    await self._pause(self.policy.retry.backoff_max_s)
        self.activity.hold(index, None)

    async def step(self, batch: Batch) -> Batch:
        """Do the one thing this batch needs next and persist the outcome."""
        step = machine.plan(batch, self.now(), self.policy)
        match step:
            case None:
                return batch
            case machine.Sleep(until=until):
                if not self._stopping:
                    await self._sleep((until - self.now()).total_seconds())
                return batch
            case machine.StartAttempt(attempt=attempt):
                if await self.scheduler.maintenance_pause():  # `pause`: nothing new goes out
                    await self._sleep(PAUSE_RECHECK_S)
                    return batch
                self._fresh_intents.add((batch.id, attempt))
                return await self._persist(batch, machine.start_attempt(batch, attempt))
            case machine.Abandon(error=error):
                return await self._observe(batch, machine.StepFailed(error))
        try:
            observation = await self._act(batch, step)
        except LeaseLost:
            raise
        except (OrchestratorError, OSError) as error:
            self.activity.incidents.step_failed(batch, step, error)
            observation = machine.StepFailed(error)
        else:
            self.activity.incidents.step_succeeded(batch, step)
        return await self._observe(batch, observation)

    async def _files_of(self, batch: Batch) -> dict[str, object]:
        """The batch's input files and ids (fixed once formed), bound to every line it logs."""
        known = self._files.get(batch.id)
        if known is None:
            parts = await self.store.batch_parts(batch.id)
            known = file_fields([p.input.name for p in parts], [p.input.id for p in parts])
            self._files[batch.id] = known
        return known

    async def _act(self, batch: Batch, step: machine.Step) -> machine.Observation:
        match step:
            case machine.CreateJob(name=name):
                return await self._create(batch, name)
            case machine.Upload():
                uploaded = await self._upload(batch)
                if isinstance(uploaded, machine.UploadFinished):
                    return machine.UploadFinished(*await self._poll_context(batch))
                return uploaded
            case machine.Poll():
                await self._respect_budget("get")
                assert batch.x_job_id is not None
                asked = self.now()
                job = await self.xapi.get_job(batch.x_job_id)
                return machine.Polled(job, *await self._poll_context(batch), asked_at=asked)
            case machine.Download():
                return await self._download(batch)
            case machine.Deliver():
                return await self._deliver(batch)
        raise AssertionError(f"unexpected step {step!r}")

    async def _poll_context(self, batch: Batch) -> tuple[Estimate | None, float | None]:
        """What times the next status request (core.polling): when jobs of this type and size
        ended before, and the spacing that keeps the `get` budget's rest lasting the window
        (None before X's headers said anything, or once the window reset: the static floor)."""
        history = await self.store.job_durations(batch.job_type)
        spacing = self.xapi.budget.spacing(
            "get", self.clock.now().timestamp(), reserve=self.settings.rate_reserve
        )
        return polling.estimate(history, batch.id_count), spacing if spacing > 0 else None

    async def _observe(self, batch: Batch, observation: machine.Observation) -> Batch:
        decision = machine.decide(batch, observation, self.now(), self.policy, self.rng)
        if isinstance(observation, machine.StepFailed):
            self._fresh_intents.discard((batch.id, batch.attempt))
            if not decision.to_state.is_final and not decision.pause:
                self.metrics.retry(str(batch.state), type(observation.error).__name__)
        return await self._persist(batch, decision, observation)

    async def _persist(
        self, batch: Batch, decision: Decision, observation: machine.Observation | None = None
    ) -> Batch:
        input_error = None
        if decision.to_state is BatchState.FAILED:
            input_error = await self._rejection_document(batch, decision, observation)
        try:
            updated = await self.store.apply(batch, decision, input_error=input_error)
        except StaleState as stale:
            # Someone else (an operator's `cancel`) moved the batch; the database wins.
            log.warning("batch.stale", error_msg=str(stale))
            current = await self.store.get_batch(batch.id)
            if current is not None and current.state.is_final:
                for part in await self.store.batch_parts(current.id):
                    await self.intake.finish_rejection(part.input.id)  # a half-done cancel
                await cleanup_after(self.store, self.layout, current)
            return current or batch
        if decision.to_state is BatchState.QUEUED and batch.state is not BatchState.QUEUED:
            # A new remote job follows: a partial download of the old one must not be resumed
            # against the new job's URL.
            for path in self.layout.batch_files(batch.id).all:
                path.unlink(missing_ok=True)
        self.activity.update(updated)
        self._log_decision(batch, decision, observation)
        if decision.pause and not self._auth_reported:
            self._auth_reported = True
            await self.store.record_pause_hooks(  # the `paused` hooks: an operator must act
                str(decision.detail.get("reason") or decision.event))
        elif not decision.pause and decision.to_state is not BatchState.QUEUED:
            self._auth_reported = False
        if decision.to_state.is_final:
            await self._finish(updated, decision)
        return updated

    def _log_decision(
        self, batch: Batch, decision: Decision, observation: machine.Observation | None = None
    ) -> None:
        if decision.pause and self._auth_reported and batch.stage_waits > 0:
            level = "debug"  # said once already; the queue is kept until the token works
        else:
            level = decision.level
        fields: dict[str, object] = {
            "from_state": str(batch.state),
            "to_state": str(decision.to_state),
            "x_job_id": decision.changes.get("x_job_id") or batch.x_job_id,
            **decision.detail,
        }
        if isinstance(observation, machine.StepFailed):
            fields.update(self._cause(observation.error, decision))
        getattr(log, level)(decision.event, **fields)

    def _cause(self, error: BaseException, decision: Decision) -> dict[str, object]:
        """Why a step failed, from the exception itself (the decision knows only its class)."""
        cause: dict[str, object] = {
            "stage": decision.detail.get("stage"),
            "error": type(error).__name__,
            "error_msg": redact_text(str(error))[:500],
        }
        for name in ("http_status", "endpoint"):
            value = getattr(error, name, None)
            if value is not None:
                cause[name] = value
        if isinstance(error, OSError):
            cause["path"] = error.filename
            cause["errno"] = errno.errorcode.get(error.errno or 0)
        at = decision.changes.get("next_attempt_at")
        if isinstance(at, datetime):
            # The same instant `status` shows as the next attempt.
            cause["retry_in_s"] = round(max(0.0, (at - self.now()).total_seconds()), 1)
        return {k: v for k, v in cause.items() if v is not None}

    async def _rejection_document(
        self, batch: Batch, decision: Decision, observation: machine.Observation | None
    ) -> dict[str, object]:
        error = observation.error if isinstance(observation, machine.StepFailed) else None
        return {
            "stage": str(batch.state),
            "reason": "gave_up",
            "message": decision.reject_reason,
            "attempts": batch.attempt,
            "stage_retries": batch.stage_retries,
            "last_http_status": getattr(error, "http_status", None) or batch.last_http_status,
            "problem": getattr(error, "problem", None),
            "job_error": decision.detail.get("job_error"),
            "x_job_ids": [row["x_job_id"] for row in await self.store.remote_jobs_of(batch.id)],
            "batch_created_at": batch.created_at.isoformat() if batch.created_at else None,
            "gave_up_at": self.now().isoformat(),
        }

    async def _finish(self, batch: Batch, decision: Decision) -> None:
        self._files.pop(batch.id, None)
        parts = await self.store.batch_parts(batch.id)
        if batch.state is BatchState.FAILED:
            for part in parts:
                await self.intake.finish_rejection(part.input.id)
        await cleanup_after(self.store, self.layout, batch)
        started = batch.created_at or self.now()
        self.metrics.batch_finished(batch, await self.store.batch_parts(batch.id), self.now())
        log.info(
            "job.finished",
            outcome=str(batch.state),
            attempts=batch.attempt,
            inputs=len(parts),
            ids=batch.id_count,
            # None when failed, or when a restart came between download and delivery.
            affected=self._affected.pop(batch.id, None),
            x_job_id=batch.x_job_id,
            duration_ms=int((self.now() - started).total_seconds() * 1000),
            # A reason code as in error.json; the sentence apart.
            reason={BatchState.FAILED: "gave_up", BatchState.CANCELLED: "cancelled"}.get(
                batch.state),
            message=decision.reject_reason,
        )

