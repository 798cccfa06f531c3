"""store.retention: old events of final work go, in bounded batches; live work's stay."""

from __future__ import annotations

from datetime import timedelta

from clocks import FakeClock

from orchestrator.clock import iso
from orchestrator.core.model import JobType
from orchestrator.store.retention import prune_events, prune_inputs
from orchestrator.store.sqlite import EventNote, Store


async def kinds(store: Store) -> list[str]:
    async with store.conn.execute("SELECT kind FROM events ORDER BY id") as cursor:
        return [row[0] for row in await cursor.fetchall()]


async def add_input(store: Store, name: str, state: str) -> int:
    row = await store.insert_claiming(job_type=JobType.TWEETS, name=name, out_stem=name,
                                      spool_name=name, inode=1, size_bytes=1)
    async with store.transaction() as conn:
        await conn.execute("UPDATE inputs SET state = ? WHERE id = ?", (state, row.id))
    return row.id


async def test_old_events_of_final_inputs_go_live_and_recent_ones_stay(store: Store) -> None:
    clock = store.clock
    assert isinstance(clock, FakeClock)
    done = await add_input(store, "done.txt", "delivered")
    live = await add_input(store, "live.txt", "queued")
    await store.conn.execute("DELETE FROM events")  # the claims' own rows
    await store.record_events([EventNote("old-done", input_id=done),
                               EventNote("old-live", input_id=live),
                               EventNote("old-none")])
    clock.advance(91 * 86400)
    await store.record_events([EventNote("new-done", input_id=done)])
    cutoff = clock.now() - timedelta(days=90)
    assert await prune_events(store, cutoff) == 2
    assert await kinds(store) == ["old-live", "new-done"]
    assert await prune_events(store, cutoff) == 0


async def test_prunes_at_most_limit_rows_per_call(store: Store) -> None:
    clock = store.clock
    assert isinstance(clock, FakeClock)
    await store.conn.execute("DELETE FROM events")
    await store.record_events([EventNote(f"e{i}") for i in range(25)])
    clock.advance(86400)
    assert [await prune_events(store, clock.now(), limit=10) for _ in range(4)] == [10, 10, 5, 0]


# ---- inputs_days ---------------------------------------------------------------------------

async def add_batch(store: Store, key: str, state: str, input_ids: list[int]) -> int:
    now = iso(store.clock.now())
    async with store.transaction() as conn:
        await conn.execute(
            "INSERT INTO batches (key, job_type, state, upload_name, created_at, updated_at)"
            " VALUES (?, 'tweets', ?, ?, ?, ?)", (key, state, key, now, now))
        async with conn.execute("SELECT id FROM batches WHERE key = ?", (key,)) as cursor:
            row = await cursor.fetchone()
        batch_id = int(row[0])
        await conn.execute(
            "INSERT INTO remote_jobs (x_job_id, batch_id, attempt, job_type, created_at)"
            " VALUES (?, ?, 1, 'tweets', ?)", (f"x-{key}", batch_id, now))
        for part, input_id in enumerate(input_ids):
            await conn.execute(
                "INSERT INTO batch_inputs (batch_id, input_id, part, id_count) VALUES (?, ?, ?, 1)",
                (batch_id, input_id, part))
    await store.record_events([EventNote(f"batch-{key}", batch_id=batch_id)])
    return batch_id


async def finish(store: Store, input_id: int, state: str) -> None:
    async with store.transaction() as conn:
        await conn.execute("UPDATE inputs SET state = ?, finished_at = ? WHERE id = ?",
                           (state, iso(store.clock.now()), input_id))


async def add_hook_run(store: Store, input_id: int, state: str) -> None:
    now = iso(store.clock.now())
    async with store.transaction() as conn:
        await conn.execute(
            "INSERT INTO hook_runs (kind, target, event, input_id, idempotency_key, state,"
            " max_attempts, next_at, created_at, updated_at)"
            " VALUES ('hook', 'h', 'delivered', ?, ?, ?, 3, ?, ?, ?)",
            (input_id, f"k{input_id}", state, now, now, now))


async def column(store: Store, sql: str) -> list[object]:
    async with store.conn.execute(sql) as cursor:
        return [row[0] for row in await cursor.fetchall()]


async def test_old_final_inputs_go_with_their_batches_live_ones_stay(store: Store) -> None:
    clock = store.clock
    assert isinstance(clock, FakeClock)
    delivered = await add_input(store, "delivered.txt", "queued")
    rejected = await add_input(store, "rejected.txt", "queued")
    hooked = await add_input(store, "hooked.txt", "queued")  # a hook run still pending
    split = await add_input(store, "split.txt", "batched")  # one part done, one in flight
    await add_input(store, "queued.txt", "queued")  # never final: never pruned
    done_batch = await add_batch(store, "b1", "done", [delivered, split])
    open_batch = await add_batch(store, "b2", "waiting", [split])
    for input_id, state in ((delivered, "delivered"), (rejected, "rejected"),
                            (hooked, "delivered")):
        await finish(store, input_id, state)
    await add_hook_run(store, delivered, "done")
    await add_hook_run(store, hooked, "pending")
    clock.advance(400 * 86400)
    recent = await add_input(store, "recent.txt", "queued")
    await finish(store, recent, "delivered")
    cutoff = clock.now() - timedelta(days=365)

    assert await prune_inputs(store, cutoff) == 2  # delivered and rejected
    assert await column(store, "SELECT name FROM inputs ORDER BY id") == [
        "hooked.txt", "split.txt", "queued.txt", "recent.txt"]
    # b1 still holds split.txt's first part: kept until split.txt goes.
    assert await column(store, "SELECT id FROM batches ORDER BY id") == [done_batch, open_batch]
    assert await column(store, "SELECT input_id FROM hook_runs") == [hooked]
    assert delivered not in await column(store, "SELECT input_id FROM events")
    assert await prune_inputs(store, cutoff) == 0

    # Once the split input is final (its last batch done), it goes, and both batches with it.
    async with store.transaction() as conn:
        await conn.execute("UPDATE batches SET state = 'done' WHERE id = ?", (open_batch,))
    await finish(store, split, "delivered")
    clock.advance(400 * 86400)
    cutoff = clock.now() - timedelta(days=365)
    assert await prune_inputs(store, cutoff, limit=1) == 1  # split.txt
    assert await prune_inputs(store, cutoff) == 1  # recent.txt, now old too
    assert await column(store, "SELECT name FROM inputs ORDER BY id") == [
        "hooked.txt", "queued.txt"]  # a pending hook run; never final
    assert await column(store, "SELECT id FROM batches") == []
    assert await column(store, "SELECT batch_id FROM remote_jobs") == []
    assert await column(store, "SELECT batch_id FROM events WHERE batch_id IS NOT NULL") == []
