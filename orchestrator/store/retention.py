"""Retention: delete old history in small transactions (the daemon's writes get in between).

Guarded: an event row goes only when it is older than the cut-off AND its batch (if any) and
its input (if any) are final, so the history of live work is never pruned, however old.
"""

from __future__ import annotations

from datetime import datetime

from orchestrator.clock import iso
from orchestrator.store.sqlite import Store

BATCH_ROWS = 1000  # per transaction: a few milliseconds of the write lock

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


async def prune_events(store: Store, older_than: datetime, limit: int = BATCH_ROWS) -> int:
    """Delete up to `limit` prunable event rows older than `older_than`; return how many."""
    async with store.transaction() as conn:
        cursor = await conn.execute(_PRUNE_EVENTS, (iso(older_than), limit))
        return int(cursor.rowcount)
