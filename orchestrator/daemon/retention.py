"""The housekeeping task: prune old event rows at start and then once an hour, in batches
of BATCH_ROWS rows per transaction with a yield in between, so the pipeline never waits."""

from __future__ import annotations

from datetime import timedelta

import anyio
import anyio.lowlevel
import structlog

from orchestrator.clock import Clock
from orchestrator.store.retention import BATCH_ROWS, prune_events
from orchestrator.store.sqlite import Store

log = structlog.get_logger(__name__)

INTERVAL_S = 3600.0


async def prune_once(store: Store, clock: Clock, events_days: float) -> int:
    """One pass; 0 days = keep forever. Returns the rows deleted."""
    if events_days <= 0:
        return 0
    cutoff = clock.now() - timedelta(days=events_days)
    total = 0
    while True:
        deleted = await prune_events(store, cutoff, BATCH_ROWS)
        total += deleted
        if deleted < BATCH_ROWS:
            break
        await anyio.lowlevel.checkpoint()  # let the pipeline's transactions in
    if total:
        log.info("retention.pruned", table="events", rows=total, older_than_days=events_days)
    return total


async def run_retention(store: Store, clock: Clock, events_days: float) -> None:
    while True:
        await prune_once(store, clock, events_days)
        await anyio.sleep(INTERVAL_S)
