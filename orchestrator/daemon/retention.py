"""The housekeeping task: at start and then once an hour, prune old event rows, old final
input rows (store/retention.py) and, when `outbox_days` is set, old deliveries in the outbox
(files/retention.py). Each in small batches (a transaction, or a few dozen files in a worker
thread) with a yield in between, so the pipeline never waits. Each pass logs what it deleted.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import anyio
import anyio.lowlevel
import structlog

from orchestrator.clock import Clock
from orchestrator.config import RetentionConfig
from orchestrator.core.model import JobType
from orchestrator.files.retention import old_manifests, prune_deliveries
from orchestrator.layout import Layout
from orchestrator.store.retention import BATCH_INPUTS, BATCH_ROWS, prune_events, prune_inputs
from orchestrator.store.sqlite import Store

log = structlog.get_logger(__name__)

INTERVAL_S = 3600.0
BATCH_FILES = 50  # deliveries per worker-thread call
DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class Retention:
    events_days: float = 90.0
    inputs_days: float = 0.0
    outbox_days: float = 0.0
    # Inputs delivered more recently than this stay (duplicate_content = "link" reuses them).
    keep_inputs_s: float = 0.0

    @classmethod
    def of(cls, config: RetentionConfig, *, keep_inputs_s: float = 0.0) -> Retention:
        return cls(config.events_days, config.inputs_days, config.outbox_days, keep_inputs_s)


async def _in_batches(prune: Callable[[Store, datetime, int], Awaitable[int]], store: Store,
                      cutoff: datetime, batch: int) -> int:
    """`prune` until a call deletes less than a whole batch; the total deleted."""
    total = 0
    while True:
        deleted = await prune(store, cutoff, batch)
        total += deleted
        if deleted < batch:
            return total
        await anyio.lowlevel.checkpoint()  # let the pipeline's transactions in


async def prune_once(store: Store, clock: Clock, events_days: float) -> int:
    """Old events; 0 days = keep forever. Returns the rows deleted."""
    if events_days <= 0:
        return 0
    cutoff = clock.now() - timedelta(days=events_days)
    total = await _in_batches(prune_events, store, cutoff, BATCH_ROWS)
    if total:
        log.info("retention.pruned", table="events", rows=total, older_than_days=events_days)
    return total


async def prune_inputs_once(store: Store, clock: Clock, inputs_days: float,
                            keep_s: float = 0.0, spool: Path | None = None) -> int:
    """Old final inputs (with their batches); 0 days = keep forever. Returns inputs deleted.
    A rejected input still in `spool` (its move to rejected/ is pending) stays."""
    if inputs_days <= 0:
        return 0
    cutoff = clock.now() - timedelta(seconds=max(inputs_days * DAY_S, keep_s))

    def still_spooled(spool_name: str) -> bool:
        return spool is not None and os.path.lexists(spool / spool_name)

    total = await _in_batches(functools.partial(prune_inputs, still_spooled=still_spooled),
                              store, cutoff, BATCH_INPUTS)
    if total:
        log.info("retention.pruned", table="inputs", rows=total, older_than_days=inputs_days)
    return total


async def prune_outbox_once(layout: Layout, clock: Clock, outbox_days: float) -> int:
    """Old deliveries in the outbox type folders; 0 days = keep forever (the default).
    Returns the deliveries (manifests) removed."""
    if outbox_days <= 0:
        return 0
    cutoff = clock.now().timestamp() - outbox_days * DAY_S
    total = 0
    for job_type in JobType:
        folder = layout.outbox_for(job_type)
        deliveries = files = 0
        while True:
            manifests = await anyio.to_thread.run_sync(
                old_manifests, folder, cutoff, BATCH_FILES)
            if not manifests:
                break
            pruned = await anyio.to_thread.run_sync(
                functools.partial(prune_deliveries, manifests))
            deliveries += pruned.deliveries
            files += pruned.files
            for name, why in pruned.errors:
                log.warning("retention.outbox_failed", job_type=str(job_type), file=name,
                            error_msg=why, retry="next pass")
            if len(manifests) < BATCH_FILES or pruned.deliveries < len(manifests):
                break  # all done, or some could not go (the next pass tries again)
        if files:
            log.info("retention.pruned", table="outbox", job_type=str(job_type),
                     deliveries=deliveries, files=files, older_than_days=outbox_days)
        total += deliveries
    return total


async def retention_pass(store: Store, layout: Layout, clock: Clock, rules: Retention) -> None:
    """One pass of everything; a failure is logged and left to the next pass."""
    steps: list[tuple[str, Callable[[], Awaitable[int]]]] = [
        ("events", functools.partial(prune_once, store, clock, rules.events_days)),
        ("inputs", functools.partial(prune_inputs_once, store, clock, rules.inputs_days,
                                     rules.keep_inputs_s, layout.spool)),
        ("outbox", functools.partial(prune_outbox_once, layout, clock, rules.outbox_days)),
    ]
    for what, step in steps:
        try:
            await step()
        except Exception as error:  # housekeeping never stops the daemon
            log.warning("retention.failed", table=what, error_msg=str(error),
                        error_class=type(error).__name__, retry="next pass")


async def run_retention(store: Store, layout: Layout, clock: Clock, rules: Retention) -> None:
    while True:
        await retention_pass(store, layout, clock, rules)
        await anyio.sleep(INTERVAL_S)
