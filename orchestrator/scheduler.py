"""Which work a lane does next: the batch in flight, or a new batch formed from the queue.

FIFO by claim order. One whole input per batch for now; packing and splitting build here.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.layout import Layout
from orchestrator.model import Batch, InputState, JobType
from orchestrator.store import Store


@dataclass(frozen=True, slots=True)
class PackingLimits:
    max_ids_per_job: int = 100_000_000
    max_bytes_per_job: int = 2_000_000_000
    pack_wait_s: float = 0.0
    enabled: bool = True


class Scheduler:
    def __init__(self, store: Store, layout: Layout, limits: PackingLimits) -> None:
        self.store = store
        self.layout = layout
        self.limits = limits

    async def next_batch(self, job_types: tuple[JobType, ...]) -> Batch | None:
        """The oldest unfinished batch of these types, else a new one from the queue."""
        active = await self.store.active_batches(job_types)
        if active:
            return active[0]
        queued = [
            i for i in await self.store.inputs_in([InputState.QUEUED]) if i.job_type in job_types
        ]
        if not queued:
            return None
        item = queued[0]
        body = self.layout.spool / item.ids_name
        return await self.store.form_batch(
            item.job_type,
            [(item.id, 0, 0, item.id_count or 0)],
            upload_name=item.ids_name,
            id_count=item.id_count or 0,
            upload_bytes=body.stat().st_size,
        )

    def idle_wait_s(self, default: float) -> float:
        """How long an idle lane may sleep before the queue needs another look."""
        return default
