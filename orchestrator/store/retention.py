"""Retention: delete old history in small transactions (the daemon's writes get in between).

Guarded: an event row goes only when it is older than the cut-off AND its batch (if any) and
its input (if any) are final, so the history of live work is never pruned, however old.

An input row goes only when it is final (delivered or rejected) since before the cut-off, no
batch holding a part of it is still open, none of its hook runs is pending or running, and
(rejected) its file has left the spool.
With it go its events, its finished hook runs, its batch parts, and every batch left with no
part (with that batch's events and remote job rows). What is lost: its line in `jobs` and
`status`, and its use as a duplicate-content twin (the daemon keeps inputs younger than
`inbox.link_max_age_s` when linking). The outbox files and rejected/ are not touched here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from orchestrator.clock import iso
from orchestrator.store.sqlite import Store

BATCH_ROWS = 1000  # per transaction: a few milliseconds of the write lock
BATCH_INPUTS = 100  # inputs per transaction (each takes its events, parts and batches)

_PRUNE_EVENTS = (
    "DELETE FROM events WHERE id IN ("
    " SELECT e.id FROM events e"
    " LEFT JOIN batches b ON b.id = e.batch_id"
    " LEFT JOIN inputs i ON i.id = e.input_id"
    " WHERE e.at < ?"
    " AND (e.batch_id IS NULL OR b.state IN ('done', 'failed', 'cancelled'))"
    " AND (e.input_id IS NULL OR i.state IN ('delivered', 'rejected'))"
    " ORDER BY e.id LIMIT ?)"
)

_PRUNABLE_INPUTS = (
    "SELECT i.id, i.state, i.spool_name FROM inputs i"
    " WHERE i.state IN ('delivered', 'rejected')"
    " AND i.finished_at IS NOT NULL AND i.finished_at < ?"
    " AND NOT EXISTS (SELECT 1 FROM batch_inputs bi JOIN batches b ON b.id = bi.batch_id"
    "  WHERE bi.input_id = i.id AND b.state NOT IN ('done', 'failed', 'cancelled'))"
    " AND NOT EXISTS (SELECT 1 FROM hook_runs h"
    "  WHERE h.input_id = i.id AND h.state IN ('pending', 'running'))"
    " ORDER BY i.id LIMIT ?"
)
_BATCHES_OF_INPUT = "SELECT DISTINCT batch_id FROM batch_inputs WHERE input_id = ?"
_DELETE_OF_INPUT = (
    "DELETE FROM hook_runs WHERE input_id = ?",
    "DELETE FROM events WHERE input_id = ?",
    "DELETE FROM batch_inputs WHERE input_id = ?",
)
_DELETE_INPUT = "DELETE FROM inputs WHERE id = ?"
# A final batch none of whose parts is left.
_EMPTIED_BATCH = (
    "SELECT b.id FROM batches b WHERE b.id = ? AND b.state IN ('done', 'failed', 'cancelled')"
    " AND NOT EXISTS (SELECT 1 FROM batch_inputs bi WHERE bi.batch_id = b.id)"
)
_DELETE_BATCH = (
    "DELETE FROM events WHERE batch_id = ?",
    "DELETE FROM remote_jobs WHERE batch_id = ?",
    "DELETE FROM batches WHERE id = ?",
)


async def prune_events(store: Store, older_than: datetime, limit: int = BATCH_ROWS) -> int:
    """Delete up to `limit` prunable event rows older than `older_than`; return how many."""
    async with store.transaction() as conn:
        cursor = await conn.execute(_PRUNE_EVENTS, (iso(older_than), limit))
        return int(cursor.rowcount)


def _never(_spool_name: str) -> bool:
    return False


async def prune_inputs(store: Store, older_than: datetime, limit: int = BATCH_INPUTS, *,
                       still_spooled: Callable[[str], bool] = _never) -> int:
    """Delete up to `limit` prunable input rows (and what hangs on them); return how many
    inputs went. One transaction: the selection and the deletes see the same rows.

    A rejected input whose file `still_spooled` (its move to rejected/ was put off: a full
    disk) is kept: its row is all that keeps the spool sweep off the only copy."""
    async with store.transaction() as conn:

        async def ids_of(sql: str, params: tuple[Any, ...]) -> list[int]:
            async with conn.execute(sql, params) as cursor:
                return [int(row[0]) for row in await cursor.fetchall()]

        async with conn.execute(_PRUNABLE_INPUTS, (iso(older_than), limit)) as cursor:
            candidates = await cursor.fetchall()
        inputs = [int(row[0]) for row in candidates
                  if not (row[1] == "rejected" and still_spooled(str(row[2])))]
        batches: set[int] = set()
        deleted = 0
        for input_id in inputs:
            batches.update(await ids_of(_BATCHES_OF_INPUT, (input_id,)))
            for sql in _DELETE_OF_INPUT:
                await conn.execute(sql, (input_id,))
            cursor = await conn.execute(_DELETE_INPUT, (input_id,))
            deleted += int(cursor.rowcount)
        for batch_id in sorted(batches):
            if await ids_of(_EMPTIED_BATCH, (batch_id,)):
                for sql in _DELETE_BATCH:
                    await conn.execute(sql, (batch_id,))
        return deleted
