"""Which work a lane does next: the batch in flight, or a new batch formed from the queue.

FIFO by claim order. X runs one job at a time and a job takes minutes whatever its size, so
small files of the same type are *packed* into one job (up to the per-job limits), and a file
above the limits is *split* into parts that run as jobs in sequence. A pack with room left
waits while its burst is still arriving (core/packing.py decides how long).

A split part's upload body is built (temp + rename) before the batch row is written;
`ensure_body` rebuilds a missing one from the batch's parts, so no crash window loses it. A
pack writes no body: the upload streams its members' files end to end (`upload_body`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import structlog

from orchestrator.core.model import Batch, BatchState, InputFile, InputState, JobType
from orchestrator.core.operator import PAUSE_KEY
from orchestrator.core.packing import PackTiming, hold_until
from orchestrator.daemon.arrivals import Arrivals
from orchestrator.files.batchfiles import MAX_LINE_BYTES, Slice, build_body
from orchestrator.layout import InputFiles, Layout
from orchestrator.logs import file_fields
from orchestrator.store.sqlite import Store

log = structlog.get_logger(__name__)

# While an operator's `pause` holds, how often lanes look whether it was lifted (real seconds
# at most, as the runner's sleeps are capped too).
PAUSE_RECHECK_S = 2.0


@dataclass(frozen=True, slots=True)
class PackingLimits:
    max_ids_per_job: int = 100_000_000
    max_bytes_per_job: int = 2_000_000_000
    pack_wait_s: float = 0.0
    pack_quiet_s: float = 0.0
    enabled: bool = True

    @property
    def max_ids(self) -> int:
        return max(1, min(self.max_ids_per_job, self.max_bytes_per_job // MAX_LINE_BYTES))


class Scheduler:
    def __init__(self, store: Store, layout: Layout, limits: PackingLimits,
                 arrivals: Arrivals | None = None) -> None:
        self.store = store
        self.layout = layout
        self.limits = limits
        self.arrivals = arrivals or Arrivals()
        self._wake_at: datetime | None = None
        self._swept = False
        self._paused: dict[str, Any] | None = None
        self._held: int | None = None  # the head of the pack last held back (logged once)

    async def next_batch(self, job_types: tuple[JobType, ...]) -> Batch | None:
        """The oldest unfinished batch of these types, else a new one from the queue."""
        self._wake_at = None
        if not self._swept:
            self._swept = True
            await self.sweep_spool()
        active = await self.store.active_batches(job_types)
        if active:
            batch = active[0]
            if batch.state in (BatchState.QUEUED, BatchState.CREATING, BatchState.UPLOADING):
                await self.ensure_body(batch)
            return batch
        if await self.maintenance_pause():
            # No new batch while paused: queued files stay withdrawable by name.
            self._wake_at = self.store.clock.now() + timedelta(seconds=PAUSE_RECHECK_S)
            return None
        queued = [
            i for i in await self.store.inputs_in([InputState.QUEUED]) if i.job_type in job_types
        ]
        if not queued:
            return None
        head = queued[0]
        done = await self.store.covered_ids(head.id)
        if done or (head.id_count or 0) > self.limits.max_ids or (
            self._body_bytes(head) > self.limits.max_bytes_per_job
        ):
            return await self._next_part(head, done)
        members = [head]
        if self.limits.enabled:
            members, full = self._pack(head, queued)
            if self._should_wait(head, members, full):
                return None
        return await self._form(head.job_type, members)

    async def maintenance_pause(self) -> bool:
        """Whether an operator's `pause` holds (re-read from the database each time, so a
        `pause`/`resume` from another process counts within PAUSE_RECHECK_S); logged on change."""
        paused = await self.store.setting(PAUSE_KEY)
        if paused != self._paused:
            if paused is not None:
                log.warning("scheduler.paused", since=paused.get("since"), by=paused.get("by"),
                            reason=paused.get("reason"),
                            detail="no new remote jobs start until `resume`")
            else:
                log.info("scheduler.resumed")
            self._paused = paused
        return paused is not None

    def idle_wait_s(self, default: float) -> float:
        """How long an idle lane may sleep before the queue needs another look."""
        if self._wake_at is None:
            return default
        left = (self._wake_at - self.store.clock.now()).total_seconds()
        return max(0.01, min(default, left))

    # ---- packing ------------------------------------------------------------------------

    def _body_bytes(self, item: InputFile) -> int:
        try:
            return (self.layout.spool / item.ids_name).stat().st_size
        except FileNotFoundError:
            return 0

    def _pack(self, head: InputFile, queued: list[InputFile]) -> tuple[list[InputFile], bool]:
        """FIFO members of head's pack, and whether it is full (the limits admit no more)."""
        members = [head]
        ids, size = head.id_count or 0, self._body_bytes(head)
        for item in queued[1:]:
            if item.job_type is not head.job_type:
                continue  # the other type keeps its place in the queue
            item_ids, item_bytes = item.id_count or 0, self._body_bytes(item)
            if (ids + item_ids > self.limits.max_ids
                    or size + item_bytes > self.limits.max_bytes_per_job):
                return members, True  # FIFO: never jump a file that doesn't fit
            members.append(item)
            ids, size = ids + item_ids, size + item_bytes
        return members, ids >= self.limits.max_ids or size >= self.limits.max_bytes_per_job

    def _should_wait(self, head: InputFile, members: list[InputFile], full: bool) -> bool:
        """Hold a pack with room left back while its burst is still arriving."""
        stamps = [m.queued_at for m in members if m.queued_at is not None]
        if not stamps:
            return False
        until = hold_until(
            PackTiming(quiet_s=self.limits.pack_quiet_s, wait_s=self.limits.pack_wait_s),
            now=self.store.clock.now(), oldest_queued_at=min(stamps),
            newest_queued_at=max(stamps), arriving=self.arrivals.arriving(head.job_type),
            full=full,
        )
        if until is None:
            return False
        if self._held != head.id:  # once per pack head, not on every wake-up
            self._held = head.id
            log.debug("batch.held", job_type=str(head.job_type), files=len(members),
                      until=until.isoformat(),
                      claiming=self.arrivals.arriving(head.job_type),
                      detail="waiting for more files of the same burst to share the job")
        self._wake_at = until
        return True

    async def _form(self, job_type: JobType, members: list[InputFile]) -> Batch:
        parts = [(m.id, 0, 0, m.id_count or 0) for m in members]
        ids = sum(m.id_count or 0 for m in members)
        if len(members) == 1:  # the input's own normalised file is the body: no copy
            head = members[0]
            return await self.store.form_batch(
                job_type, parts, upload_name=head.ids_name, id_count=ids,
                upload_bytes=self._body_bytes(head),
            )
        # A pack's body is its members' normalised files end to end, streamed from them at
        # upload time (upload_body): nothing is copied. The name is only the batch's label.
        name = self.layout.input_files(members[0].spool_name).pack_ids.name
        batch = await self.store.form_batch(
            job_type, parts, upload_name=name, id_count=ids,
            upload_bytes=sum(self._body_bytes(m) for m in members),
        )
        log.info("batch.packed", batch_id=batch.id, job_type=str(job_type), ids=ids,
                 **file_fields([m.name for m in members], [m.id for m in members]))
        return batch

    # ---- splitting ----------------------------------------------------------------------

    async def _next_part(self, head: InputFile, done: int) -> Batch:
        total = head.id_count or 0
        count = min(self.limits.max_ids, total - done)
        part = len(await self.store.parts_of_input(head.id))
        name = self.layout.input_files(head.spool_name).part_ids(part).name
        piece = Slice(self.layout.spool / head.ids_name, done, count)
        batch = await self._form_with_body(head.job_type, [(head.id, part, done, count)], name,
                                           [piece])
        log.info("batch.split_part", batch_id=batch.id, file=head.name, part=part,
                 first_id=done, ids=count, input_ids=total)
        return batch

    async def _form_with_body(
        self, job_type: JobType, parts: list[tuple[int, int, int, int]], name: str,
        pieces: list[Slice],
    ) -> Batch:
        # Built before the row is written; the name is a function of the parts, so a crash
        # before the row commits only means the next formation overwrites the same file.
        ids, size = await anyio.to_thread.run_sync(build_body, pieces, self.layout.spool / name)
        return await self.store.form_batch(job_type, parts, upload_name=name, id_count=ids,
                                           upload_bytes=size)

    async def sweep_spool(self) -> list[str]:
        """Remove spool files no live input or batch refers to (a crash between a batch
        becoming final and its cleanup leaves some). Lists the folder *before* reading the
        database, so a file claimed meanwhile is never mistaken for garbage."""
        present = [p.name for p in self.layout.spool.iterdir()
                   if p.is_file() and not p.name.startswith(".tmp-")]
        live = await self.store.inputs_in(
            [InputState.CLAIMING, InputState.CLAIMED, InputState.QUEUED, InputState.BATCHED])
        live_inputs = {i.spool_name for i in live}
        # A `.ids` copy an older version made of a file that is its own upload body.
        # (Queued or batched only: a claimed input's copy may be a validation in flight.)
        stale_copies = {i.copy_name for i in live if i.body_is_input
                        and i.state in (InputState.QUEUED, InputState.BATCHED)}
        # A rejected input's own file waits in the spool until it can be moved; nothing else
        # of it is needed any more.
        live_files = {i.spool_name for i in await self.store.inputs_in([InputState.REJECTED])}
        for batch in await self.store.active_batches(list(JobType)):
            live_files.update({batch.upload_name,
                               *(p.name for p in self.layout.batch_files(batch.id).all)})
        removed = []
        for name in present:
            if name in live_files or (InputFiles.owner(name) in live_inputs
                                      and name not in stale_copies):
                continue
            (self.layout.spool / name).unlink(missing_ok=True)
            removed.append(name)
        if removed:
            log.info("spool.swept", files=len(removed))
        return removed

    async def ensure_body(self, batch: Batch) -> Path | list[Path]:
        """The upload body exists (a part's rebuilt from the batch's parts after a crash if
        needed); see upload_body."""
        return await upload_body(self.store, self.layout, batch)


async def upload_body(store: Store, layout: Layout, batch: Batch) -> Path | list[Path]:
    """What a batch uploads: its body file, or for a pack of whole inputs the members'
    normalised files in pack order (byte for byte the body a copy would hold; packs formed
    by an older version have that copy, which is used while it exists). A split part's body
    missing after a crash is rebuilt from the batch's parts."""
    body = layout.spool / batch.upload_name
    if body.exists():
        return body
    parts = await store.batch_parts(batch.id)
    # In input id order, as the pack was formed (the queue is FIFO by id).
    whole = [layout.spool / p.input.ids_name for p in parts
             if p.first_id == 0 and p.id_count == p.input.id_count]
    if len(whole) == len(parts) and (len(parts) > 1 or parts[0].input.body_is_input):
        return whole if len(whole) > 1 else whole[0]
    pieces = [Slice(layout.spool / p.input.ids_name, p.first_id, p.id_count) for p in parts]
    await anyio.to_thread.run_sync(build_body, pieces, body)
    log.info("batch.body_rebuilt", batch_id=batch.id)
    return body
