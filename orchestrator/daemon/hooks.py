"""The hook worker: runs due hook and webhook runs from the store, a bounded number at once,
beside (never inside) the job lanes, with its own backoff timers.

At-least-once: every run is a row written with the input's move (store/hookruns.py); a run a
crash interrupted is due again at the next start with the same idempotency key. A command
hook runs without a shell in a session of its own; on timeout its whole process group is
killed. Its environment holds PATH, LANG and TZ from the daemon and the COMPLIANCE_*
variables (core/hooks.py): never the token or anything else of the daemon's environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import structlog

from orchestrator.clock import Clock
from orchestrator.config import Config, HookConfig, WebhookConfig
from orchestrator.core.hooks import HookTarget, RunState, after_failure, hook_environment, tail
from orchestrator.core.model import InputState, JobType
from orchestrator.core.retry import RetryPolicy
from orchestrator.daemon.webhooks import post_webhook
from orchestrator.files.rejected import error_record_of
from orchestrator.layout import Layout
from orchestrator.redact import redact_text
from orchestrator.store.hookruns import HookRun
from orchestrator.store.sqlite import Store
from orchestrator.wakeup import Wakeup

log = structlog.get_logger(__name__)

MAX_AT_ONCE = 2  # hook runs in flight together
IDLE_LOOK_S = 1.0  # how often due runs are looked for (retry-hooks of another process)
REJECTION_WAIT_S = 1.0  # a rejected input's file is still being moved: look again soon
KILL_GRACE_S = 2.0  # SIGTERM to the group on timeout, then SIGKILL after this


def targets_of(config: Config) -> tuple[HookTarget, ...]:
    hooks = [HookTarget("hook", f"hooks[{i}]", h.on, h.job_type, h.max_attempts)
             for i, h in enumerate(config.hooks)]
    webhooks = [HookTarget("webhook", f"webhooks[{i}]", w.on, w.job_type, w.max_attempts)
                for i, w in enumerate(config.webhooks)]
    return (*hooks, *webhooks)


@dataclass(frozen=True, slots=True)
class Outcome:
    state: str  # "done" | "retry" | "failed"
    error: str | None = None


def _read_json(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class HookWorker:
    def __init__(self, store: Store, layout: Layout, config: Config, *,
                 session: aiohttp.ClientSession, clock: Clock,
                 on_outcome: Callable[[str, str, str], None] = lambda kind, on, outcome: None,
                 on_pending: Callable[[int], None] = lambda count: None,
                 environ: Mapping[str, str] = os.environ,
                 rng: random.Random | None = None) -> None:
        self.store = store
        self.layout = layout
        self.hooks = {f"hooks[{i}]": h for i, h in enumerate(config.hooks)}
        self.webhooks = {f"webhooks[{i}]": w for i, w in enumerate(config.webhooks)}
        self.session = session
        self.clock = clock
        self.on_outcome = on_outcome
        self.on_pending = on_pending
        self.environ = dict(environ)
        self.rng = rng or random.Random()
        self.wakeup = Wakeup()
        self._limiter = anyio.CapacityLimiter(MAX_AT_ONCE)
        self._in_flight = 0

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        again = await self.store.recover_hook_runs()
        if again:
            log.warning("hook.rerun_after_restart", runs=again,
                        detail="interrupted by a stop or crash; run again with the same key")
        task_status.started()
        async with anyio.create_task_group() as group:
            while True:
                try:
                    due = await self.store.claim_due_hook_runs(MAX_AT_ONCE - self._in_flight)
                    for run in due:
                        self._in_flight += 1
                        group.start_soon(self._one, run)
                    idle_s = await self._idle_s()
                except (OSError, sqlite3.Error) as error:  # the database busy, a full disk
                    log.warning("hook.schedule_failed", error=type(error).__name__,
                                error_msg=redact_text(str(error)), retry_in_s=IDLE_LOOK_S)
                    idle_s = IDLE_LOOK_S
                await self.wakeup.wait(idle_s)

    async def _idle_s(self) -> float:
        counts = await self.store.count_hook_runs()
        self.on_pending(counts[RunState.PENDING] + counts[RunState.RUNNING])
        due = await self.store.next_hook_due()
        if due is None or self._in_flight >= MAX_AT_ONCE:
            return IDLE_LOOK_S
        return max(0.0, min(IDLE_LOOK_S, (due - self.clock.now()).total_seconds()))

    async def _one(self, run: HookRun) -> None:
        try:
            async with self._limiter:
                await self._attempt(run)
        except (OSError, sqlite3.Error) as error:
            # Its row stays `running`: the next start runs it again (same key).
            log.error("hook.record_failed", run_id=run.id, target=run.target,
                      error=type(error).__name__, error_msg=redact_text(str(error)))
        finally:
            self._in_flight -= 1
            self.wakeup.notify()

    async def _attempt(self, run: HookRun) -> None:
        config: HookConfig | WebhookConfig | None = (
            self.hooks.get(run.target) if run.kind == "hook" else self.webhooks.get(run.target))
        if config is None:
            await self.store.finish_hook_run(run.id, RunState.FAILED,
                                             error=f"{run.target} is no longer configured")
            self.on_outcome(run.kind, run.event, "failed")
            return
        facts = await self._facts(run)
        if facts is None:  # a rejection whose file is still being moved: not an attempt
            await self.store.finish_hook_run(run.id, RunState.PENDING, delay_s=REJECTION_WAIT_S,
                                             uncount=True)
            return
        log.info("hook.started", kind=run.kind, target=run.target, on=run.event,
                 run_id=run.id, attempt=run.attempts, idempotency_key=run.key)
        try:
            if isinstance(config, HookConfig):
                outcome = await self._command(run, config, facts)
            else:
                verdict, error = await post_webhook(self.session, config, run, facts, self.clock)
                outcome = Outcome(verdict, error)
        except Exception as error:  # a broken hook must not stop the worker
            outcome = Outcome("retry", redact_text(f"{type(error).__name__}: {error}"))
        await self._record(run, config, outcome)

    async def _record(self, run: HookRun, config: HookConfig | WebhookConfig,
                      outcome: Outcome) -> None:
        if outcome.state == "done":
            await self.store.finish_hook_run(run.id, RunState.DONE)
            log.info("hook.done", kind=run.kind, target=run.target, on=run.event,
                     run_id=run.id, attempt=run.attempts)
            self.on_outcome(run.kind, run.event, "done")
            return
        policy = RetryPolicy(backoff_initial_s=config.backoff_initial_s,
                             backoff_max_s=config.backoff_max_s)
        step = after_failure(run.attempts, run.max_attempts, self.rng, policy,
                             permanent=outcome.state == "failed")
        await self.store.finish_hook_run(run.id, step.state, error=outcome.error,
                                         delay_s=step.delay_s)
        if step.state is RunState.FAILED:
            log.error("hook.failed", kind=run.kind, target=run.target, on=run.event,
                      run_id=run.id, attempts=run.attempts, error_msg=outcome.error,
                      action="recorded; `retry-hooks` runs it again")
            self.on_outcome(run.kind, run.event, "failed")
        else:
            log.warning("hook.retry", kind=run.kind, target=run.target, on=run.event,
                        run_id=run.id, attempt=run.attempts, error_msg=outcome.error,
                        retry_in_s=round(step.delay_s, 3))
            self.on_outcome(run.kind, run.event, "retry")

    async def _facts(self, run: HookRun) -> dict[str, Any] | None:
        """What the hook is told: paths, type, name, counts, key; None: not ready yet."""
        facts: dict[str, Any] = {"event": run.event, "idempotency_key": run.key,
                                 "attempt": run.attempts, "run_id": run.id}
        if run.event == "paused":
            return {**facts, "reason": run.detail.get("reason")}
        item = await self.store.get_input(run.input_id) if run.input_id is not None else None
        if item is None:
            return facts
        facts.update(job_type=str(item.job_type), input=item.name, input_id=item.id)
        batch = await self.store.get_batch(run.batch_id) if run.batch_id else None
        facts["batch_key"] = batch.key if batch is not None else None
        job_type = JobType(item.job_type)
        if run.event == "delivered":
            manifest = self.layout.manifest_path(job_type, item.out_stem)
            counts = _read_json(manifest).get("counts") or {}
            facts.update(results=self.layout.results_path(job_type, item.out_stem),
                         manifest=manifest, submitted=counts.get("submitted"),
                         affected=counts.get("affected"))
            return facts
        if item.state is InputState.REJECTED and (self.layout.spool / item.spool_name).exists():
            return None
        error_path = await anyio.to_thread.run_sync(
            error_record_of, self.layout.rejected, item.name, item.id)
        facts.update(error=error_path, submitted=item.id_count,
                     reason=(item.error or {}).get("reason"))
        return facts

    async def _command(self, run: HookRun, hook: HookConfig, facts: dict[str, Any]) -> Outcome:
        env = hook_environment(self.environ, facts)
        process = await anyio.open_process(
            list(hook.command), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True, cwd=self.layout.state_dir)
        try:
            timed_out, output = await _wait(process, hook.timeout_s)
        finally:
            if process.returncode is None:  # cancelled by a stop: leave no hook running
                _kill_now(process.pid)  # (its row stays `running`: run again at the start)
        text = redact_text(output.decode("utf-8", "replace"))
        log.info("hook.output", run_id=run.id, target=run.target, exit_code=process.returncode,
                 output=text)
        if timed_out:
            return Outcome("retry", f"timed out after {hook.timeout_s:g} s; process group killed")
        if process.returncode == 0:
            return Outcome("done")
        return Outcome("retry", f"exit status {process.returncode}")


async def _wait(process: anyio.abc.Process, timeout_s: float) -> tuple[bool, bytes]:
    """(timed out, the last OUTPUT_TAIL_BYTES of its output)."""
    output = b""
    timed_out = False
    async with anyio.create_task_group() as group:

        async def read() -> None:
            nonlocal output
            assert process.stdout is not None
            async for chunk in process.stdout:
                output = tail(output, chunk)

        group.start_soon(read)
        with anyio.move_on_after(timeout_s) as scope:
            await process.wait()
        if scope.cancelled_caught:
            timed_out = True
            await _kill_group(process.pid, process)
        # A child left holding stdout must not hold the worker: read a moment, then stop.
        with anyio.move_on_after(0.5):
            await process.wait()
        group.cancel_scope.cancel()
    return timed_out, output


def _kill_now(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


async def _kill_group(pid: int, process: anyio.abc.Process) -> None:
    """SIGTERM to the hook's whole process group, SIGKILL after a grace: children it left
    behind (its own session: start_new_session) die with it."""
    for sig, wait_s in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        with anyio.move_on_after(wait_s):
            await process.wait()
