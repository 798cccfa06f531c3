"""Property test of the state machines over the real store (hypothesis stateful).

Random sequences of intake (claim, validate, link, reject), batch formation (packing and
splitting, as the scheduler does), the runner's steps (plan -> observation -> decide ->
apply, with observations valid or not for the state and errors of every class), one-by-one
delivery, operator commands (cancel with/without --force, retry), crashes (the database is
closed and reopened: nothing in memory survives) and time passing (past upload and download
deadlines). After every step:

- no input is lost: each one ever added is where the model says (live, delivered, rejected);
- none is delivered twice (the event log has at most one move to `delivered` per input);
- every persisted batch and input move is in ALLOWED / INPUT_ALLOWED and continues from the
  state the previous move left (read back from the event log); final states are final;
- a done batch's inputs are delivered, or (split, with parts left) not delivered yet;
- a stale or forbidden transition raises StaleState (InputMoveNotAllowed for a move outside
  the input table) and writes nothing.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import random
import shutil
import tempfile
from collections import Counter
from collections.abc import Coroutine
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from clocks import FakeClock
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from orchestrator import errors as E
from orchestrator.core import machine, operator
from orchestrator.core.decision import Decision
from orchestrator.core.inputs import INPUT_ALLOWED, InputMoveNotAllowed
from orchestrator.core.machine import ALLOWED, Policy
from orchestrator.core.model import Batch, BatchState, InputState, JobType, RemoteJob
from orchestrator.core.retry import RetryPolicy
from orchestrator.store.sqlite import StaleState, Store

B, I = BatchState, InputState  # noqa: E741
T = TypeVar("T")

# Errors of every class the runner can turn into StepFailed (adapters raise these; a bug in
# delivery can surface as StaleState, an OrchestratorError too).
REMOTE_ERRORS: list[Exception] = [
    E.RetryableError("503 Service Unavailable", http_status=503),
    E.RetryableError("connection refused"),
    E.RateLimited("429 Too Many Requests", http_status=429, retry_after=60.0),
    E.RateLimited("429 without a reset header", http_status=429),
    E.ConflictError("409 another job is active", http_status=409),
    E.IntegrityError("crc32c mismatch"),
    E.RemoteError("unclassified remote error"),
    E.PermanentError("400 Bad Request", http_status=400),
    E.AuthError("401 Unauthorized", http_status=401),
    E.UploadWindowClosed("ExpiredToken from storage"),
    E.UploadSessionGone("upload session 410 Gone", http_status=410),
    E.RemoteJobEnded("job expired before its upload"),
    E.DownloadExpired("download URL expired", http_status=400),
]
LOCAL_ERRORS: list[Exception] = [
    OSError(errno.ENOSPC, "No space left on device"),
    OSError(errno.EIO, "Input/output error"),
    StaleState("input 1 is not in ['batched']"),
    E.OrchestratorError("unexpected"),
    E.InputRejected("bad body"),
    E.ConfigError(),
]
ALL_ERRORS = REMOTE_ERRORS + LOCAL_ERRORS
# What `_deliver` can raise: files and the store, never a remote deadline.
DELIVER_ERRORS = LOCAL_ERRORS
# Weighted towards progress, so that most runs reach delivery.
POLL_STATUSES = ["created", "in_progress", "in_progress", "complete", "complete", "complete",
                 "failed", "expired", "paused_by_x"]
OPEN_BATCH_STATES = frozenset(s for s in BatchState if not s.is_final)
OBSERVED_IN = [B.CREATING, B.UPLOADING, B.WAITING, B.DOWNLOADING, B.DELIVERING]
FILE_IDS = st.integers(1, 3) | st.integers(4, 12)  # small ones pack, large ones split
SMALL_BUDGETS = Policy(max_attempts=3, retry=RetryPolicy(max_stage_retries=2))


def remote_job(job_id: str, job_type: JobType, status: str, created: datetime,
               upload_until: datetime, download_until: datetime,
               error: str | None = None) -> RemoteJob:
    return RemoteJob(
        id=job_id, type=job_type, status=status, created_at=created,
        upload_url="https://storage.example/up?X-Goog-Signature=secret",
        upload_expires_at=upload_until,
        download_url="https://storage.example/down?X-Goog-Signature=secret",
        download_expires_at=download_until, error=error,
    )


class StoreMachine(RuleBasedStateMachine):
    """The model: what each input's and batch's state must be, updated only on success."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="state-props-"))
        self.db = self.dir / "state.db"
        self.clock = FakeClock()
        self.loop = asyncio.Runner()
        self.store = self.run(Store.open(self.db, self.clock))
        self.policy = SMALL_BUDGETS
        self.max_ids = 5
        self.fault_odds = 6
        self.rng = random.Random(0)
        self.names = itertools.count(1)
        self.job_ids = itertools.count(9000)
        # model
        self.inputs: dict[int, InputState] = {}
        self.id_counts: dict[int, int] = {}
        self.types: dict[int, JobType] = {}
        self.batches: dict[int, BatchState] = {}
        self.batch_types: dict[int, JobType] = {}
        self.parts: dict[int, list[tuple[int, int, int, int]]] = {}
        self.snapshots: list[Batch] = []  # reads a slow process may still act on
        # audit of the event log
        self.last_event = 0
        self.input_trail: dict[int, str] = {}
        self.batch_trail: dict[int, str] = {}
        self.delivered = Counter[int]()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run(coro)

    def teardown(self) -> None:
        try:
            self.run(self.store.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    @initialize(seed=st.integers(0, 2**32 - 1), max_ids=st.integers(3, 9),
                fault_odds=st.sampled_from([0, 20, 6, 3]),
                files=st.lists(st.tuples(st.sampled_from(JobType), FILE_IDS),
                               max_size=5))
    def configure(self, seed: int, max_ids: int, fault_odds: int,
                  files: list[tuple[JobType, int]]) -> None:
        """Seed the jitter, pick the per-job limit and how often a step fails (1 in N, or
        never: swarm-style, so some runs go deep and others are stormy), and queue a few
        files to start with."""
        self.rng = random.Random(seed)
        self.max_ids = max_ids
        self.fault_odds = fault_odds
        for job_type, ids in files:
            self.add_input(job_type, ids, I.QUEUED)

    # ---- model helpers --------------------------------------------------------------------

    def covered(self, input_id: int) -> int:
        return sum(count for bid, parts in self.parts.items() if self.batches[bid] is B.DONE
                   for (iid, _part, _first, count) in parts if iid == input_id)

    def open_batches(self) -> list[int]:
        return sorted(b for b, s in self.batches.items() if s in OPEN_BATCH_STATES)

    def members(self, batch_id: int) -> list[int]:
        return sorted({iid for (iid, _p, _f, _c) in self.parts[batch_id]})

    def applied(self, before: Batch, decision: Decision, after: Batch) -> None:
        """A decision persisted: the batch moved, and a final state moved its inputs."""
        assert after.state is decision.to_state
        event(f"batch {before.state} -> {decision.to_state}")
        self.batches[before.id] = decision.to_state
        if not decision.to_state.is_final:
            return
        for iid in self.members(before.id):
            if self.inputs[iid] is I.DELIVERED:
                continue  # delivered one by one during DELIVERING
            if decision.to_state is B.DONE:
                done = self.covered(iid) >= self.id_counts[iid]
                self.inputs[iid] = I.DELIVERED if done else I.QUEUED
                event("input delivered with its batch" if done else "split part done")
            else:
                self.inputs[iid] = I.REJECTED

    def expect_refused(self, coro: Coroutine[Any, Any, Any],
                       error: type[Exception] = StaleState) -> None:
        """The call raises `error` (nothing else) and writes no history line."""
        before = [e["id"] for e in self.run(self.store.events_after(self.last_event))]
        with pytest.raises(error):
            self.run(coro)
        assert [e["id"] for e in self.run(self.store.events_after(self.last_event))] == before

    def apply(self, batch: Batch, decision: Decision, **kwargs: Any) -> None:
        """Persist a decision taken on `batch`; predict success from the model."""
        current = self.batches[batch.id]
        if current is not batch.state or decision.to_state not in ALLOWED[batch.state]:
            self.expect_refused(self.store.apply(batch, decision, **kwargs))
            return
        if decision.guard:
            fresh = self.run(self.store.get_batch(batch.id))
            assert fresh is not None
            if any(getattr(fresh, k) != v for k, v in decision.guard.items()):
                self.expect_refused(self.store.apply(batch, decision, **kwargs))
                return
        self.applied(batch, decision, self.run(self.store.apply(batch, decision, **kwargs)))

    # ---- intake ---------------------------------------------------------------------------

    @rule(job_type=st.sampled_from(JobType), ids=FILE_IDS,
          upto=st.sampled_from([I.CLAIMING, I.CLAIMED, I.QUEUED]))
    def add_input(self, job_type: JobType, ids: int, upto: InputState) -> None:
        """intake.claim: the intent row, the rename, then validation queues it."""
        n = next(self.names)

        async def go() -> None:
            row = await self.store.insert_claiming(
                job_type=job_type, name=f"f{n}.txt", out_stem=f"f{n}",
                spool_name=f"{job_type}-{n}.spool", inode=n, size_bytes=ids * 20)
            self.inputs[row.id], self.id_counts[row.id], self.types[row.id] = (
                I.CLAIMING, ids, job_type)
            if upto is not I.CLAIMING:
                await self.store.move_input(row.id, [I.CLAIMING], I.CLAIMED,
                                            event="inbox.claimed", detail={"file": row.name})
                self.inputs[row.id] = I.CLAIMED
            if upto is I.QUEUED:
                await self.queue(row.id)

        self.run(go())

    async def queue(self, input_id: int) -> None:
        await self.store.move_input(
            input_id, [I.CLAIMED], I.QUEUED, event="input.queued",
            detail={"ids": self.id_counts[input_id]}, queued_at=self.clock.now(),
            id_count=self.id_counts[input_id], bad_line_count=0, body_sha256=f"sha{input_id}")
        self.inputs[input_id] = I.QUEUED

    @precondition(lambda self: self.inputs)
    @rule(data=st.data(), undo=st.booleans())
    def finish_claim(self, data: st.DataObject, undo: bool) -> None:
        """intake.recover: a claim's rename happened (-> claimed) or not (the row goes)."""
        input_id = data.draw(st.sampled_from(sorted(self.inputs)))
        call: Coroutine[Any, Any, Any]
        if undo:
            call = self.store.delete_claiming(input_id, "claim interrupted")
        else:
            call = self.store.move_input(input_id, [I.CLAIMING], I.CLAIMED,
                                         event="inbox.claimed", detail={"recovered": True})
        if self.inputs[input_id] is not I.CLAIMING:
            self.expect_refused(call)
            return
        self.run(call)
        if undo:
            for table in (self.inputs, self.id_counts, self.types):
                del table[input_id]
        else:
            self.inputs[input_id] = I.CLAIMED

    @precondition(lambda self: self.inputs)
    @rule(data=st.data(), outcome=st.sampled_from(["queue", "reject", "link", "wait_for_twin"]))
    def validate(self, data: st.DataObject, outcome: str) -> None:
        """intake/dedupe/rejections: what becomes of a claimed input (stale on any other)."""
        input_id = data.draw(st.sampled_from(sorted(self.inputs)))
        state = self.inputs[input_id]
        call: Coroutine[Any, Any, Any]
        if outcome == "queue":
            sources, target = [I.CLAIMED], I.QUEUED
            call = self.queue(input_id)
        elif outcome == "reject":
            if state is I.QUEUED:
                return  # rejections.reject runs at validation only, i.e. on claimed inputs
            sources, target = [I.CLAIMED, I.QUEUED], I.REJECTED
            call = self.store.move_input(
                input_id, sources, target, event="input.rejected", detail={"reason": "empty"},
                error_json={"stage": "validation", "reason": "empty", "input_id": input_id})
        elif outcome == "link":
            sources, target = [I.CLAIMED], I.DELIVERED
            call = self.store.move_input(input_id, sources, target, event="outbox.linked",
                                         detail={"twin_input_id": 0})
        else:
            sources, target = [I.CLAIMED], I.CLAIMED
            call = self.store.move_input(input_id, sources, target,
                                         event="input.waiting_for_twin")
        if state not in sources:
            self.expect_refused(call)
            return
        self.run(call)
        self.inputs[input_id] = target

    def forbidden_input_move(self, data: st.DataObject) -> None:
        """A move outside INPUT_ALLOWED is refused whatever state the input is in."""
        input_id = data.draw(st.sampled_from(sorted(self.inputs)))
        source = data.draw(st.sampled_from(InputState))
        target = data.draw(st.sampled_from([s for s in InputState
                                            if s not in INPUT_ALLOWED[source]]))
        self.expect_refused(self.store.move_input(input_id, [source], target, event="bogus"),
                            InputMoveNotAllowed)

    # ---- scheduling (scheduler.next_batch) ------------------------------------------------

    def lanes_with_work(self) -> list[JobType]:
        """Job types (one lane each) with a batch in flight or queued inputs."""
        return sorted({self.batch_types[b] for b in self.open_batches()}
                      | {self.types[i] for i, s in self.inputs.items() if s is I.QUEUED})

    def in_flight(self, job_type: JobType) -> int | None:
        return next((b for b in self.open_batches() if self.batch_types[b] is job_type), None)

    def form_batch(self, job_type: JobType, *, pack: bool) -> int | None:
        """scheduler.next_batch with nothing in flight: the next part of a split input, or
        a pack of queued files in FIFO order (or just the oldest one)."""
        queued = [i for i in sorted(self.inputs)
                  if self.inputs[i] is I.QUEUED and self.types[i] is job_type]
        if not queued:
            return None
        head = queued[0]
        total = self.id_counts[head]

        async def go() -> Batch:
            done = await self.store.covered_ids(head)
            assert done == self.covered(head)
            if done or total > self.max_ids:  # split: the next part
                part = len(await self.store.parts_of_input(head))
                parts = [(head, part, done, min(self.max_ids, total - done))]
            else:  # pack, FIFO, never jumping a file that doesn't fit
                members, ids = [head], total
                for other in queued[1:] if pack else []:
                    if ids + self.id_counts[other] > self.max_ids:
                        break
                    members.append(other)
                    ids += self.id_counts[other]
                parts = [(m, 0, 0, self.id_counts[m]) for m in members]
            ids = sum(p[3] for p in parts)
            return await self.store.form_batch(job_type, parts, upload_name=f"body-{head}",
                                               id_count=ids, upload_bytes=ids * 20)

        batch = self.run(go())
        assert batch.state is B.QUEUED
        parts = [(p.input.id, p.part, p.first_id, p.id_count)
                 for p in self.run(self.store.batch_parts(batch.id))]
        event(f"batch formed with {len(parts)} part(s)")
        self.batches[batch.id], self.batch_types[batch.id] = B.QUEUED, job_type
        self.parts[batch.id] = parts
        for iid in {p[0] for p in parts}:
            self.inputs[iid] = I.BATCHED
        return batch.id

    # ---- the runner -----------------------------------------------------------------------

    def observation(self, data: st.DataObject, batch: Batch,
                    state: BatchState) -> machine.Observation:
        """An observation of the step `state` calls for (what the runner can see there)."""
        now = self.clock.now()
        if self.fault_odds and data.draw(st.integers(1, self.fault_odds), label="fails") == 1:
            errors = DELIVER_ERRORS if state is B.DELIVERING else ALL_ERRORS
            return machine.StepFailed(data.draw(st.sampled_from(errors), label="error"))
        match state:
            case B.CREATING:
                window = data.draw(st.sampled_from([900, 86400, 30]), label="upload_window_s")
                keep = data.draw(st.sampled_from([1800, 86400, 7 * 86400]), label="download_s")
                job = remote_job(str(next(self.job_ids)), batch.job_type, "created", now,
                                 now + timedelta(seconds=window),
                                 now + timedelta(seconds=keep))
                return machine.JobCreated(job, adopted=data.draw(st.booleans(), label="adopt"))
            case B.UPLOADING:
                if data.draw(st.integers(0, 3), label="session") == 0:
                    return machine.UploadSessionStarted("https://storage.example/s?id=secret")
                return machine.UploadFinished()
            case B.WAITING:
                status = data.draw(st.sampled_from(POLL_STATUSES), label="status")
                return machine.Polled(remote_job(
                    batch.x_job_id or "0", batch.job_type, status, batch.x_created_at or now,
                    batch.upload_expires_at or now, batch.download_expires_at or now,
                    error="quota" if status == "failed" else None))
            case B.DOWNLOADING:
                return machine.Downloaded(data.draw(st.integers(0, batch.id_count)))
            case B.DELIVERING:
                return machine.DeliveredAll()
        raise AssertionError(f"no observation in {state}")

    def any_observation(self, data: st.DataObject, batch: Batch) -> machine.Observation:
        """Any observation at all, fit for the state or not."""
        state = data.draw(st.sampled_from(OBSERVED_IN), label="as_if_in")
        return self.observation(data, batch, state)

    def deliver(self, data: st.DataObject, batch: Batch) -> machine.Observation | None:
        """deliver.deliver_batch: inputs whose last part this is are marked delivered one by
        one; a failure or a crash (None) may come between any two of them."""
        parts = [p for p in self.run(self.store.batch_parts(batch.id))
                 if p.input.state is not I.DELIVERED]
        fail_at = data.draw(st.integers(0, len(parts) + 2), label="fail_at")
        for index, part in enumerate(parts):
            if index == fail_at:
                if data.draw(st.booleans(), label="killed"):
                    event("crash between two deliveries")
                    self.crash()
                    return None
                return machine.StepFailed(data.draw(st.sampled_from(DELIVER_ERRORS)))
            item = part.input
            covered = self.run(self.store.covered_ids(item.id)) + part.id_count
            if covered < (item.id_count or 0):
                continue  # a part of a split input: its results wait in the spool
            self.run(self.store.mark_delivered(item.id, batch.id))
            self.inputs[item.id] = I.DELIVERED
            event("input delivered one by one")
        return machine.DeliveredAll()

    @precondition(lambda self: self.lanes_with_work())
    @rule(data=st.data(), steps=st.integers(1, 25), pack=st.booleans())
    def lane_runs(self, data: st.DataObject, steps: int, pack: bool) -> None:
        """A lane's loop for a while: the batch in flight (or a new one from the queue), one
        runner.step at a time; a Sleep lets the clock run to the wake-up time, as the lane's
        wait does."""
        job_type = data.draw(st.sampled_from(self.lanes_with_work()), label="lane")
        for _ in range(steps):
            batch_id = self.in_flight(job_type)
            if batch_id is None:
                batch_id = self.form_batch(job_type, pack=pack)
                if batch_id is None:
                    return  # the lane idles
            self.runner_step(data, batch_id)

    def runner_step(self, data: st.DataObject, batch_id: int) -> None:
        """runner.step: plan on a fresh read, act, decide, persist."""
        batch = self.run(self.store.get_batch(batch_id))
        assert batch is not None
        self.snapshots.append(batch)
        step = machine.plan(batch, self.clock.now(), self.policy)
        match step:
            case None:
                raise AssertionError(f"nothing planned for an open batch in {batch.state}")
            case machine.Sleep(until=until):
                assert until > self.clock.now()
                self.clock.advance((until - self.clock.now()).total_seconds())
                return
            case machine.StartAttempt(attempt=attempt):
                decision = machine.start_attempt(batch, attempt)
            case machine.Abandon(error=error):
                decision = self.decide(batch, machine.StepFailed(error))
            case machine.Deliver():
                seen = self.deliver(data, batch)
                if seen is None:
                    return
                decision = self.decide(batch, seen)
            case _:
                decision = self.decide(batch, self.observation(data, batch, batch.state))
        # What the runner does in a state never leaves the table: a pure-core property.
        assert decision.to_state in ALLOWED[batch.state], (batch.state, decision)
        if data.draw(st.integers(0, 19), label="killed_before_commit") == 0:
            self.crash()  # the outcome is lost with the process; the step is done again
            return
        document = {"reason": "gave_up"} if decision.to_state is B.FAILED else None
        self.apply(batch, decision, input_error=document)

    def decide(self, batch: Batch, obs: machine.Observation) -> Decision:
        return machine.decide(batch, obs, self.clock.now(), self.policy, self.rng)

    def wild_observation(self, data: st.DataObject) -> None:
        """An observation out of place (or for a final batch): decide refuses it, or the
        store refuses a transition outside the table, or it is one the table allows."""
        if not self.batches:
            return
        batch_id = data.draw(st.sampled_from(sorted(self.batches)), label="batch")
        batch = self.run(self.store.get_batch(batch_id))
        assert batch is not None
        if data.draw(st.booleans(), label="restart_attempt"):
            decision = machine.start_attempt(batch, batch.attempt + 1)
        else:
            obs = self.any_observation(data, batch)
            try:
                decision = self.decide(batch, obs)
            except ValueError:
                assert not isinstance(obs, machine.StepFailed)
                return
        self.apply(batch, decision, input_error={"reason": "gave_up"})

    def late_delivery(self, data: st.DataObject) -> None:
        """mark_delivered of an input already delivered, or for a batch that is not (or no
        longer) delivering, is stale: a delivered input never sits in a batch that can
        still fail or be cancelled."""
        batch_id = data.draw(st.sampled_from(sorted(self.batches)), label="batch")
        input_id = data.draw(st.sampled_from(self.members(batch_id)), label="input")
        call = self.store.mark_delivered(input_id, batch_id)
        if self.inputs[input_id] is not I.BATCHED or self.batches[batch_id] is not B.DELIVERING:
            self.expect_refused(call)
            return
        part_ids = sum(c for (i, _p, _f, c) in self.parts[batch_id] if i == input_id)
        if self.covered(input_id) + part_ids < self.id_counts[input_id]:
            call.close()  # deliver.py never marks a split input before its last part
            return
        self.run(call)
        self.inputs[input_id] = I.DELIVERED

    def second_lane(self, data: st.DataObject) -> None:
        """Another lane (after a reload changed the lanes, say) forms a batch from an input
        it read as queued: refused once the input is in another batch, which could never
        finish otherwise."""
        input_id = data.draw(st.sampled_from(sorted(self.inputs)), label="input")
        count = self.id_counts[input_id]
        call = self.store.form_batch(self.types[input_id], [(input_id, 9, 0, count)],
                                     upload_name="late", id_count=count, upload_bytes=1)
        if self.inputs[input_id] is not I.QUEUED:
            self.expect_refused(call)
        else:
            call.close()  # the real thing: form_batch() does it

    def stale_decision(self, data: st.DataObject) -> None:
        """A decision taken on an old read (the daemon while the operator cancelled, an
        operator command while the daemon moved on) is refused with StaleState."""
        old = data.draw(st.sampled_from(self.stale_snapshots()), label="snapshot")
        kind = data.draw(st.sampled_from(["step", "cancel", "retry"]), label="kind")
        decision: Decision | None
        if kind == "cancel":
            decision = operator.cancel(old, force=True, files=[])
        elif kind == "retry":
            decision = operator.clear_wait(old, self.clock.now() - timedelta(days=30),
                                           last_error=None)
        elif old.state is B.QUEUED:
            decision = machine.start_attempt(old, old.attempt + 1)
        elif old.state.is_final:
            decision = None
        else:
            decision = self.decide(old, self.observation(data, old, old.state))
        if decision is not None:
            self.expect_refused(self.store.apply(old, decision))

    @precondition(lambda self: self.inputs)
    @rule(data=st.data())
    def something_stale_or_forbidden(self, data: st.DataObject) -> None:
        """One of the calls a confused or late caller makes; each is refused or harmless."""
        choices = [self.forbidden_input_move, self.wild_observation]
        if self.batches:
            choices += [self.late_delivery, self.second_lane]
        if self.stale_snapshots():
            choices.append(self.stale_decision)
        data.draw(st.sampled_from(choices), label="call")(data)

    def stale_snapshots(self) -> list[Batch]:
        return [s for s in self.snapshots if s.state is not self.batches[s.id]]

    # ---- the operator ---------------------------------------------------------------------

    @precondition(lambda self: self.batches)
    @rule(data=st.data(), command=st.sampled_from(["retry", "retry", "cancel", "cancel --force"]))
    def operator(self, data: st.DataObject, command: str) -> None:
        batch_id = data.draw(st.sampled_from(sorted(self.batches)), label="batch")
        if command == "retry":
            self.operator_retry(batch_id)
        else:
            self.operator_cancel(batch_id, force=command.endswith("--force"))

    def operator_cancel(self, batch_id: int, *, force: bool) -> None:
        """cli/cancel.py: refused unless queued, or --force with a remote job."""
        batch = self.run(self.store.get_batch(batch_id))
        assert batch is not None
        parts = self.run(self.store.batch_parts(batch.id))
        inputs = list({p.input.id: p.input for p in parts}.values())
        decision = operator.cancel(batch, force=force, files=[i.name for i in inputs])
        if decision is None:
            assert batch.state.is_final or batch.state is B.DELIVERING or (
                batch.state in operator.REMOTE_STATES and not force)
            return
        assert decision.to_state in ALLOWED[batch.state]
        # The scheduler never puts an input in two open batches, so cancel is never refused
        # for sharing.
        assert not self.run(self.store.open_batches_sharing(batch.id, [i.id for i in inputs]))
        documents = {i.id: {"reason": "cancelled", "file": i.name} for i in inputs}
        self.apply(batch, decision, input_errors=documents)

    def operator_retry(self, batch_id: int) -> None:
        """cli/retry.py: a waiting batch's next step becomes due now."""
        batch = self.run(self.store.get_batch(batch_id))
        assert batch is not None
        now = self.clock.now()
        decision = operator.clear_wait(batch, now, last_error=batch.last_error)
        if decision is None:
            assert batch.state.is_final or batch.next_attempt_at is None or (
                batch.next_attempt_at <= now)
            return
        self.apply(batch, decision)
        after = self.run(self.store.get_batch(batch_id))
        assert after is not None and after.state is batch.state
        assert after.next_attempt_at is None and after.stage_retries == after.stage_waits == 0

    # ---- crashes and time -----------------------------------------------------------------

    @rule()
    def crash(self) -> None:
        """Close and reopen the database: only what it holds survives."""
        for state in sorted({self.batches[b] for b in self.open_batches()}):
            event(f"crash with a batch {state}")
        self.run(self.store.close())
        self.store = self.run(Store.open(self.db, self.clock))

    @rule(seconds=st.sampled_from([0.5, 5, 61, 301, 3600, 6 * 3600, 86400, 8 * 86400]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    # ---- invariants -----------------------------------------------------------------------

    @invariant()
    def history_stays_in_the_tables(self) -> None:
        """Every new event continues its row's story by an allowed move; finals are final."""
        for row in self.run(self.store.events_after(self.last_event)):
            self.last_event = row["id"]
            kind, frm, to = row["kind"], row["from_state"], row["to_state"]
            if row["input_id"] is not None:
                self._audit_input(row["input_id"], kind, frm, to)
            else:
                assert row["batch_id"] is not None, dict(row)
                self._audit_batch(row["batch_id"], kind, frm, to)

    def _audit_input(self, input_id: int, kind: str, frm: str | None, to: str | None) -> None:
        prev = self.input_trail.get(input_id)
        if frm is None:
            assert prev is None and kind == "inbox.claiming" and to == I.CLAIMING, (kind, prev)
            self.input_trail[input_id] = to
            return
        sources = frm.split("|")
        assert prev is not None and prev in sources, (input_id, kind, prev, frm, to)
        assert not I(prev).is_final, f"input {input_id} left final state {prev} ({kind})"
        if to is None:  # the claim was undone: the row is gone
            assert kind == "inbox.claim_undone" and prev == I.CLAIMING, (kind, prev)
            del self.input_trail[input_id]
            return
        assert all(I(to) in INPUT_ALLOWED[I(s)] for s in sources), (kind, frm, to)
        self.input_trail[input_id] = to
        if to == I.DELIVERED:
            self.delivered[input_id] += 1

    def _audit_batch(self, batch_id: int, kind: str, frm: str | None, to: str | None) -> None:
        prev = self.batch_trail.get(batch_id)
        if kind == "batch.formed":
            assert prev is None and frm is None and to == B.QUEUED, (batch_id, prev, to)
        else:
            assert frm is not None and to is not None, (batch_id, kind)
            assert prev == frm, (batch_id, kind, prev, frm)
            assert not B(prev).is_final, f"batch {batch_id} left final state {prev} ({kind})"
            assert B(to) in ALLOWED[B(frm)], (batch_id, kind, frm, to)
        self.batch_trail[batch_id] = to

    @invariant()
    def nothing_lost_nothing_twice(self) -> None:
        every = self.run(self.store.inputs_in(InputState))
        assert {i.id: i.state for i in every} == self.inputs
        assert {i: I(s) for i, s in self.input_trail.items()} == self.inputs
        for input_id, times in self.delivered.items():
            assert times == 1, f"input {input_id} delivered {times} times"
        assert {i for i, s in self.inputs.items() if s is I.DELIVERED} == set(self.delivered)
        for batch_id, state in self.batches.items():
            found = self.run(self.store.get_batch(batch_id))
            assert found is not None and found.state is state
        assert {b: B(s) for b, s in self.batch_trail.items()} == self.batches

    def last_part_delivering(self, iid: int) -> bool:
        return any(self.batches[b] is B.DELIVERING and iid in {p[0] for p in parts}
                   for b, parts in self.parts.items())

    @invariant()
    def inputs_sit_where_their_batches_say(self) -> None:
        carried: dict[int, list[BatchState]] = {}
        for batch_id, parts in self.parts.items():
            state = self.batches[batch_id]
            for iid in {p[0] for p in parts}:
                carried.setdefault(iid, []).append(state)
                have, covered, total = self.inputs[iid], self.covered(iid), self.id_counts[iid]
                if state is B.DONE:
                    # Done: delivered once every ID went through done batches, never before.
                    if covered >= total:
                        assert have is I.DELIVERED, (batch_id, iid, have)
                    elif self.last_part_delivering(iid):
                        # Its last part is in a later batch that is delivering right now:
                        # delivered one by one there, before that batch is done.
                        assert have in (I.BATCHED, I.DELIVERED), (batch_id, iid, have)
                    else:
                        assert have in (I.QUEUED, I.BATCHED, I.REJECTED), (batch_id, iid, have)
                elif state in (B.FAILED, B.CANCELLED):
                    assert have is I.REJECTED, (batch_id, state, iid, have)
                elif state is B.DELIVERING:
                    assert have in (I.BATCHED, I.DELIVERED), (batch_id, iid, have)
                else:
                    assert have is I.BATCHED, (batch_id, state, iid, have)
        for iid, have in self.inputs.items():
            open_ = [s for s in carried.get(iid, []) if not s.is_final]
            if have is I.BATCHED:
                assert len(open_) == 1, (iid, carried.get(iid))
            elif have in (I.CLAIMING, I.CLAIMED):
                assert iid not in carried
            elif have is I.QUEUED:
                assert not open_ and self.covered(iid) < self.id_counts[iid]
            elif have is I.DELIVERED and iid in carried:
                assert self.covered(iid) >= self.id_counts[iid] or open_ == [B.DELIVERING]


StoreMachine.TestCase.settings = settings(
    max_examples=80, stateful_step_count=50, deadline=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestStateProperties = StoreMachine.TestCase


# ---- regressions the property test found ---------------------------------------------------


async def test_undoing_a_claim_that_moved_on_is_stale_and_writes_nothing(store: Store) -> None:
    """delete_claiming is compare-and-set like every move: on an input that is no longer
    claiming it used to delete nothing yet log `inbox.claim_undone` (claiming -> gone) for
    an input that still existed, and to raise nothing."""
    row = await store.insert_claiming(job_type=JobType.TWEETS, name="a.txt", out_stem="a",
                                      spool_name="a.spool", inode=1, size_bytes=10)
    await store.move_input(row.id, [I.CLAIMING], I.CLAIMED, event="inbox.claimed")
    before = await store.events_after(0)
    with pytest.raises(StaleState):
        await store.delete_claiming(row.id, "claim interrupted")
    assert [e["id"] for e in await store.events_after(0)] == [e["id"] for e in before]
    kept = await store.get_input(row.id)
    assert kept is not None and kept.state is I.CLAIMED
    # Still claiming: the row goes, with its event.
    other = await store.insert_claiming(job_type=JobType.TWEETS, name="b.txt",
                                        out_stem="b", spool_name="b.spool", inode=2,
                                        size_bytes=10)
    await store.delete_claiming(other.id, "claim interrupted")
    assert await store.get_input(other.id) is None
    assert (await store.events_after(0))[-1]["kind"] == "inbox.claim_undone"


async def test_a_delivery_for_a_batch_that_is_not_delivering_is_stale(store: Store) -> None:
    """mark_delivered used to deliver any batched input, whatever its batch's state: an
    input marked delivered while its batch was still waiting stayed `delivered` (with no
    results) when that batch failed or was cancelled."""
    row = await store.insert_claiming(job_type=JobType.TWEETS, name="a.txt", out_stem="a",
                                      spool_name="a.spool", inode=1, size_bytes=10)
    await store.move_input(row.id, [I.CLAIMING], I.CLAIMED, event="inbox.claimed")
    await store.move_input(row.id, [I.CLAIMED], I.QUEUED, event="input.queued", id_count=3)
    batch = await store.form_batch(JobType.TWEETS, [(row.id, 0, 0, 3)], upload_name="x",
                                   id_count=3, upload_bytes=30)
    other = await store.form_batch(JobType.TWEETS, [], upload_name="y", id_count=0,
                                   upload_bytes=0)
    before = [e["id"] for e in await store.events_after(0)]
    with pytest.raises(StaleState):
        await store.mark_delivered(row.id, batch.id)  # queued, not delivering
    with pytest.raises(StaleState):
        await store.mark_delivered(row.id, other.id)  # a batch that doesn't carry it
    assert [e["id"] for e in await store.events_after(0)] == before
    cancel = operator.cancel(batch, force=False, files=[])
    assert cancel is not None
    cancelled = await store.apply(batch, cancel)
    assert cancelled.state is B.CANCELLED
    item = await store.get_input(row.id)
    assert item is not None and item.state is I.REJECTED


async def test_an_input_in_another_batch_cannot_join_a_new_one(store: Store) -> None:
    """form_batch used to accept an input already `batched` in another open batch; the
    second batch could then never finish (nor be cancelled): finishing moves its inputs out
    of `batched`, and the first batch had already moved the input on."""
    row = await store.insert_claiming(job_type=JobType.TWEETS, name="a.txt", out_stem="a",
                                      spool_name="a.spool", inode=1, size_bytes=10)
    await store.move_input(row.id, [I.CLAIMING], I.CLAIMED, event="inbox.claimed")
    await store.move_input(row.id, [I.CLAIMED], I.QUEUED, event="input.queued", id_count=10)
    first = await store.form_batch(JobType.TWEETS, [(row.id, 0, 0, 5)], upload_name="p0",
                                   id_count=5, upload_bytes=50)
    before = [e["id"] for e in await store.events_after(0)]
    with pytest.raises(StaleState):
        await store.form_batch(JobType.TWEETS, [(row.id, 1, 5, 5)], upload_name="p1",
                               id_count=5, upload_bytes=50)
    assert [e["id"] for e in await store.events_after(0)] == before
    assert await store.active_batches([JobType.TWEETS]) == [first]
    # Two parts of one input in the same batch are still one move each.
    other = await store.insert_claiming(job_type=JobType.TWEETS, name="b.txt",
                                        out_stem="b", spool_name="b.spool", inode=2,
                                        size_bytes=10)
    await store.move_input(other.id, [I.CLAIMING], I.CLAIMED, event="inbox.claimed")
    await store.move_input(other.id, [I.CLAIMED], I.QUEUED, event="input.queued",
                           id_count=4)
    both = await store.form_batch(JobType.TWEETS, [(other.id, 0, 0, 2), (other.id, 1, 2, 2)],
                                  upload_name="b", id_count=4, upload_bytes=40)
    assert len(await store.batch_parts(both.id)) == 2
