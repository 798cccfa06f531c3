"""The SQLite store: compare-and-set transitions, the event log, batches of inputs."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from clocks import FakeClock

from orchestrator.core import machine
from orchestrator.core.model import BatchState, InputState, JobType, RemoteJob, RemoteStatus
from orchestrator.store.sqlite import StaleState, Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "state.db", FakeClock())
    try:
        yield opened
    finally:
        await opened.close()


async def queued_input(store: Store, name: str = "a.txt", ids: int = 3) -> int:
    row = await store.insert_claiming(job_type=JobType.TWEETS, name=name, out_stem=name[:-4],
                                      spool_name=f"{name}.spool", inode=1, size_bytes=10)
    await store.move_input(row.id, [InputState.CLAIMING], InputState.CLAIMED, event="t")
    await store.move_input(row.id, [InputState.CLAIMED], InputState.QUEUED, event="t",
                           id_count=ids)
    return row.id


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
