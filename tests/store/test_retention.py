"""store.retention: old events of final work go, in bounded batches; live work's stay."""

from __future__ import annotations

from datetime import timedelta

from clocks import FakeClock

from orchestrator.core.model import JobType
from orchestrator.store.retention import prune_events
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
