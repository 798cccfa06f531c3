"""The SQLite store: compare-and-set transitions, the event log, batches of inputs."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest
from clocks import FakeClock
from store_helpers import queued_input

from orchestrator.core import machine, operator
from orchestrator.core.inputs import InputMoveNotAllowed
from orchestrator.core.model import (
    Batch,
    BatchState,
    InputState,
    JobType,
    RemoteJob,
    RemoteStatus,
)
from orchestrator.store.sqlite import EventNote, StaleState, Store


async def events(store: Store) -> list[str]:
    async with store.conn.execute("SELECT kind FROM events ORDER BY id") as cursor:
        return [r["kind"] for r in await cursor.fetchall()]


async def test_input_transitions_are_compare_and_set(store: Store) -> None:
    input_id = await queued_input(store)
    with pytest.raises(StaleState):
        await store.move_input(input_id, [InputState.CLAIMED], InputState.QUEUED, event="t")
    item = await store.get_input(input_id)
    assert item is not None and item.state is InputState.QUEUED and item.id_count == 3


async def test_out_stem_is_unique_per_type(store: Store) -> None:
    await queued_input(store, "a.txt")
    assert await store.out_stem_taken(JobType.TWEETS, "a")
    assert not await store.out_stem_taken(JobType.USERS, "a")


async def test_form_batch_moves_inputs_and_logs(store: Store) -> None:
    input_id = await queued_input(store)
    batch = await store.form_batch(JobType.TWEETS, [(input_id, 0, 0, 3)],
                                   upload_name="x.ids", id_count=3, upload_bytes=30)
    assert batch.state is BatchState.QUEUED and batch.key.startswith("co-")
    item = await store.get_input(input_id)
    assert item is not None and item.state is InputState.BATCHED
    parts = await store.batch_parts(batch.id)
    assert [p.input.id for p in parts] == [input_id]
    assert "batch.formed" in await events(store)


async def test_apply_is_guarded_and_records_remote_jobs(store: Store) -> None:
    input_id = await queued_input(store)
    batch = await store.form_batch(JobType.TWEETS, [(input_id, 0, 0, 3)],
                                   upload_name="x.ids", id_count=3, upload_bytes=30)
    creating = await store.apply(batch, machine.start_attempt(batch, 1))
    assert creating.state is BatchState.CREATING and creating.x_job_name == f"{batch.key}-1"
    # A second writer holding the stale QUEUED view cannot move it again.
    with pytest.raises(StaleState):
        await store.apply(batch, machine.start_attempt(batch, 1))
    now = store.clock.now()
    job = RemoteJob(id="123", type=JobType.TWEETS, status=RemoteStatus.CREATED, created_at=now,
                    upload_url="u", upload_expires_at=now, download_url="d",
                    download_expires_at=now)
    decision = machine.decide(creating, machine.JobCreated(job), now, machine.Policy(),
                              random.Random(0))
    uploading = await store.apply(creating, decision)
    assert uploading.x_job_id == "123"
    assert [r["x_job_id"] for r in await store.remote_jobs_of(batch.id)] == ["123"]


async def test_failed_batch_rejects_its_inputs_in_the_same_transaction(store: Store) -> None:
    input_id = await queued_input(store)
    batch = await store.form_batch(JobType.TWEETS, [(input_id, 0, 0, 3)],
                                   upload_name="x.ids", id_count=3, upload_bytes=30)
    creating = await store.apply(batch, machine.start_attempt(batch, 1))
    give_up = machine.Decision(BatchState.FAILED, "batch.gave_up", reject_reason="nope")
    await store.apply(creating, give_up, input_error={"message": "nope", "stage": "creating"})
    item = await store.get_input(input_id)
    assert item is not None and item.state is InputState.REJECTED
    assert item.error == {"message": "nope", "stage": "creating", "file": "a.txt",
                          "input_id": input_id, "job_type": "tweets", "batch_id": batch.id}


async def test_disallowed_transition_is_refused(store: Store) -> None:
    input_id = await queued_input(store)
    batch = await store.form_batch(JobType.TWEETS, [(input_id, 0, 0, 3)],
                                   upload_name="x.ids", id_count=3, upload_bytes=30)
    with pytest.raises(StaleState, match="not allowed"):
        await store.apply(batch, machine.Decision(BatchState.DONE, "x"))


async def test_reopening_keeps_state(tmp_path: Path) -> None:
    first = await Store.open(tmp_path / "state.db", FakeClock())
    input_id = await queued_input(first)
    await first.close()
    second = await Store.open(tmp_path / "state.db", FakeClock())
    try:
        item = await second.get_input(input_id)
        assert item is not None and item.state is InputState.QUEUED
    finally:
        await second.close()


# ---- one door: the input table, operator decisions, remote-job history --------------------


async def test_input_move_outside_the_table_is_refused_and_writes_nothing(store: Store) -> None:
    input_id = await queued_input(store)
    before = await events(store)
    with pytest.raises(InputMoveNotAllowed):
        await store.move_input(input_id, [InputState.QUEUED], InputState.DELIVERED, event="t")
    item = await store.get_input(input_id)
    assert item is not None and item.state is InputState.QUEUED
    assert await events(store) == before


async def waiting_batch(store: Store, *ids: int) -> Batch:
    batch = await store.form_batch(JobType.TWEETS, [(i, 0, 0, 3) for i in ids],
                                   upload_name="x.ids", id_count=3 * len(ids), upload_bytes=30)
    policy, rng, now = machine.Policy(max_attempts=1), random.Random(0), store.clock.now()
    creating = await store.apply(batch, machine.start_attempt(batch, 1))
    job = RemoteJob(id="123", type=JobType.TWEETS, status=RemoteStatus.CREATED, created_at=now,
                    upload_url="u", upload_expires_at=now + timedelta(minutes=15),
                    download_url="d", download_expires_at=now + timedelta(days=7))
    uploading = await store.apply(
        creating, machine.decide(creating, machine.JobCreated(job), now, policy, rng))
    waiting = await store.apply(
        uploading, machine.decide(uploading, machine.UploadFinished(), now, policy, rng))
    running = RemoteJob(**{**{f: getattr(job, f) for f in job.__slots__},
                           "status": RemoteStatus.IN_PROGRESS})
    return await store.apply(
        waiting, machine.decide(waiting, machine.Polled(running), now, policy, rng))


async def remote_history(store: Store, batch_id: int) -> list[tuple[str, str | None]]:
    return [(r["final_status"], r["error"]) for r in await store.remote_jobs_of(batch_id)]


async def test_forced_cancel_rejects_inputs_and_keeps_what_x_said(store: Store) -> None:
    first, second = await queued_input(store, "a.txt"), await queued_input(store, "b.txt")
    batch = await waiting_batch(store, first, second)
    assert await remote_history(store, batch.id) == [("in_progress", None)]
    decision = operator.cancel(batch, force=True, files=["a.txt", "b.txt"])
    assert decision is not None
    await store.apply(batch, decision, input_errors={first: {"reason": "cancelled", "n": 1}})
    cancelled = await store.get_batch(batch.id)
    assert cancelled is not None and cancelled.state is BatchState.CANCELLED
    a, b = await store.get_input(first), await store.get_input(second)
    assert a is not None and b is not None
    assert a.state is b.state is InputState.REJECTED
    assert a.error == {"reason": "cancelled", "n": 1, "file": "a.txt", "input_id": first,
                       "job_type": "tweets", "batch_id": batch.id}
    assert a.out_stem == f"a#rejected-{first}"  # the outbox name is free for a requeue
    # The last status X reported stays; the missing error is filled with the reason.
    assert await remote_history(store, batch.id) == [("in_progress", operator.CANCEL_REASON)]
    assert (await events(store))[-3:] == ["operator.cancel", "input.rejected", "input.rejected"]


async def test_giving_up_on_a_failed_remote_job_records_its_status(store: Store) -> None:
    batch = await waiting_batch(store, await queued_input(store))
    now = store.clock.now()
    failed = RemoteJob(id="123", type=JobType.TWEETS, status=RemoteStatus.FAILED,
                       created_at=now, upload_url="u", upload_expires_at=now, download_url="d",
                       download_expires_at=now, error="bad file")
    decision = machine.decide(batch, machine.Polled(failed), now,
                              machine.Policy(max_attempts=1), random.Random(0))
    assert decision.to_state is BatchState.FAILED
    await store.apply(batch, decision, input_error={"message": "gave up"})
    assert await remote_history(store, batch.id) == [("failed", "bad file")]


async def test_clear_wait_is_refused_when_the_daemon_moved_on(store: Store) -> None:
    batch = await waiting_batch(store, await queued_input(store))
    assert batch.next_attempt_at is not None
    decision = operator.clear_wait(batch, store.clock.now(), last_error=None)
    assert decision is not None
    # Meanwhile the daemon polled again (same state, a new due time): nothing is written.
    moved = machine.Decision(BatchState.WAITING, "job.status",
                             {"next_attempt_at": batch.next_attempt_at + timedelta(seconds=9)})
    later = await store.apply(batch, moved)
    with pytest.raises(StaleState):
        await store.apply(batch, decision)
    assert await store.get_batch(batch.id) == later
    cleared = operator.clear_wait(later, store.clock.now(), last_error=None)
    assert cleared is not None
    done = await store.apply(later, cleared)
    assert done.next_attempt_at is None and done.stage_retries == done.stage_waits == 0
    assert (await events(store))[-1] == "operator.retry"


async def test_record_events_can_require_a_batch_state(store: Store) -> None:
    batch = await waiting_batch(store, await queued_input(store))
    note = EventNote("operator.retry", batch_id=batch.id, detail={"action": "requeue"})
    with pytest.raises(StaleState):
        await store.record_events([note], batch_in=(batch.id, BatchState.FAILED))
    assert "operator.retry" not in await events(store)
    await store.record_events([note, note], batch_in=(batch.id, BatchState.WAITING))
    assert (await events(store))[-2:] == ["operator.retry", "operator.retry"]


async def test_inputs_are_counted_per_type_by_the_database(store: Store) -> None:
    await queued_input(store, "a.txt")
    await queued_input(store, "b.txt")
    row = await store.insert_claiming(job_type=JobType.USERS, name="u.txt", out_stem="u",
                                      spool_name="u.spool", inode=2, size_bytes=1)
    waiting = [InputState.CLAIMING, InputState.CLAIMED, InputState.QUEUED]
    assert await store.count_inputs_by_type(waiting) == {"tweets": 2, "users": 1}
    assert await store.count_inputs_by_type([InputState.BATCHED]) == {}
    await store.delete_claiming(row.id, "gone")
    assert await store.count_inputs_by_type(waiting) == {"tweets": 2}
