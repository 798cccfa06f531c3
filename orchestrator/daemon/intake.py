"""From a stable inbox file to a queued input: claim, validate, then link or queue it.

Claiming is ordered for kill -9 at any line: (1) a `claiming` row records the intent and the
inode, (2) the file is renamed into the spool, (3) the row becomes `claimed`. `recover()`
heals a crash between any two steps (claim_recovery.py). Rejection writes the reason to the
database first and then moves the file, so a restart finishes a half-done rejection instead
of losing the file.

Duplicate content is dedupe.py's job (link to an earlier result); moving a rejected file to
outbox/rejected/ is rejections.py's.

Local trouble (an outbox that cannot be written, a full spool disk) never rejects or loses an
input: the work is left where the database says it is and `maintenance()` retries it.
"""

from __future__ import annotations

import errno
import functools
import os
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import structlog

from orchestrator.core.model import InputFile, InputState, JobType
from orchestrator.daemon.claim_recovery import recover_claiming
from orchestrator.daemon.claimwait import ClaimBackoff, check_room, too_large_reason
from orchestrator.daemon.dedupe import Deduper, DuplicatePolicy, stored_fields
from orchestrator.daemon.rejections import Rejections
from orchestrator.errors import InputRejected
from orchestrator.files.atomic import (
    DEFAULT_MIN_FREE_BYTES,
    NAME_MAX_BYTES,
    NoRoom,
    truncate_name,
)
from orchestrator.files.claim import (
    Replaced,
    StillWritten,
    Unclaimable,
    move_into_spool,
    read_and_normalise,
    still_changing,
)
from orchestrator.files.idfile import IdFileReport, Policy
from orchestrator.files.inbox import Candidate, InvalidEntry, changed_since, display_name
from orchestrator.files.records import DEFAULT_ID_COLUMNS, normalise_input
from orchestrator.layout import InputFiles, Layout
from orchestrator.logs import WarnOnce
from orchestrator.redact import redact_text
from orchestrator.store.sqlite import StaleState, Store

log = structlog.get_logger(__name__)

MANIFEST_SUFFIX = ".manifest.json"
# Room for the longest outbox suffix plus a "-<n>" that keeps stems unique.
_STEM_MAX_BYTES = NAME_MAX_BYTES - len(MANIFEST_SUFFIX) - 8
# Write-side failures: the state dir's problem, not the input's; retried, never rejected.
_LOCAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EMFILE, errno.ENFILE})


def _stem(name: str) -> str:
    stem = Path(name).stem
    stem = stem if stem and not stem.startswith(".") else name
    # `<stem>.manifest.json` must fit in NAME_MAX, or delivery would fail forever.
    return truncate_name(stem, _STEM_MAX_BYTES)


class Intake:
    def __init__(
        self, store: Store, layout: Layout, *, invalid_lines: Policy = "reject",
        duplicate_content: DuplicatePolicy = "process", link_max_age_s: float = 86400.0,
        on_queued: Callable[[], None] = lambda: None, max_input_bytes: int = 4 << 30,
        min_free_bytes: int = DEFAULT_MIN_FREE_BYTES, settle_s: float = 0.0,
        backoff: ClaimBackoff | None = None,
        formats: Mapping[JobType, str] | None = None, id_column: str = "",
        on_rejected: Callable[[str, str], None] = lambda job_type, reason: None,
    ) -> None:
        self.store = store
        self.formats = dict(formats or {})
        self.id_columns = ((id_column,) if id_column else ()) + DEFAULT_ID_COLUMNS
        self.max_input_bytes = max_input_bytes
        self.min_free_bytes = min_free_bytes
        self.settle_s = settle_s  # a changed claimed file must be quiet this long (min_age_s)
        self.backoff = backoff or ClaimBackoff(store.clock)
        self.layout = layout
        self.invalid_lines = invalid_lines
        self.duplicate_content = duplicate_content
        self.on_queued = on_queued
        self.warnings = WarnOnce()
        self.deduper = Deduper(store, layout, link_max_age_s=link_max_age_s,
                               warnings=self.warnings)
        self.rejections = Rejections(store, layout, self.warnings, min_free=min_free_bytes,
                                     on_rejected=on_rejected)
        self._busy: set[int] = set()  # inputs a task is working on right now
        self._unclaimable: set[tuple[str, int, int]] = set()  # (path, inode, size)

    # ---- claiming -----------------------------------------------------------------------

    async def _choose_out_stem(self, job_type: JobType, name: str) -> str:
        base = _stem(name)
        candidate, n = base, 1
        while await self.store.out_stem_taken(job_type, candidate) or any(
            os.path.lexists(p) for p in (self.layout.results_path(job_type, candidate),
                                         self.layout.manifest_path(job_type, candidate))
        ):
            n += 1
            candidate = f"{base}-{n}"
        return candidate

    async def claim(self, candidate: Candidate) -> InputFile | None:
        name = display_name(candidate.path.name)
        if candidate.size > self.max_input_bytes:
            if not self.rejections.is_pending(candidate.path):
                await self.rejections.reject_entry(InvalidEntry(
                    candidate.path, candidate.job_type,
                    too_large_reason(candidate.size, self.max_input_bytes),
                    candidate.size, candidate.mtime_ns, candidate.inode))
            return None
        unclaimable = (str(candidate.path), candidate.inode, candidate.size)
        if unclaimable in self._unclaimable or not self.backoff.ready(candidate):
            return None  # reported once already; a changed file gets another try
        room_key = ("room", str(candidate.path))
        try:
            await anyio.to_thread.run_sync(
                check_room, candidate, self.layout.spool, self.min_free_bytes)
        except NoRoom as no_room:  # nothing was copied: statvfs again on the next rescan
            self.warnings.warn(log, room_key, "inbox.claim_waiting_for_space", no_room,
                               file=name, job_type=str(candidate.job_type),
                               bytes=candidate.size, free_bytes=no_room.free,
                               min_free_bytes=no_room.min_free, retry="every rescan")
            return None
        self.warnings.resolved(log, room_key, "inbox.claim_space_available", file=name)
        if any(i.job_type == candidate.job_type and i.name == name
               for i in await self.store.inputs_in([InputState.CLAIMING])):
            # Another claim of this very file is in flight (another host, sharing the inbox):
            # its rename decides. Choosing around its outbox name would deliver as `name-2`.
            return None
        out_stem = await self._choose_out_stem(candidate.job_type, name)
        spool_name = InputFiles.new_name(candidate.job_type)
        try:
            row = await self.store.insert_claiming(
                job_type=candidate.job_type, name=name, out_stem=out_stem,
                spool_name=spool_name, inode=candidate.inode, size_bytes=candidate.size,
                name_bytes=os.fsencode(candidate.path.name), mtime_ns=candidate.mtime_ns,
                ctime_ns=candidate.ctime_ns or None,
            )
        except StaleState:  # another host took that outbox name this instant: look again
            return None
        self._busy.add(row.id)
        try:
            target = self.layout.spool / spool_name
            try:
                await anyio.to_thread.run_sync(
                    move_into_spool, candidate.path, target, candidate.inode
                )
            except Unclaimable as stuck:
                self._unclaimable.add(unclaimable)
                await self.store.delete_claiming(row.id, "cannot remove it from the inbox")
                log.error("inbox.unclaimable", file=name, job_type=str(candidate.job_type),
                          error_msg=redact_text(str(stuck.args[0])),
                          hint="the daemon must be able to delete files in the inbox folder")
                return None
            except (FileNotFoundError, Replaced) as gone:
                replaced = isinstance(gone, Replaced)
                reason = ("replaced since it was found; checked again once stable" if replaced
                          else "file vanished before it was claimed")
                await self.store.delete_claiming(row.id, reason)
                log.info("inbox.claim_skipped", file=name, job_type=str(candidate.job_type),
                         reason="replaced" if replaced else "vanished", detail=reason)
                return None
            except OSError as error:
                with anyio.CancelScope(shield=True):
                    await recover_claiming(self.store, self.layout, row)
                if error.errno not in _LOCAL_ERRNOS:
                    raise
                # The spool's disk, not the file: wait (longer each time) instead of copying
                # the same file again on every rescan.
                delay = self.backoff.failed(candidate)
                self.warnings.warn(log, ("claim", str(candidate.path)), "inbox.claim_deferred",
                                   error, file=name, job_type=str(candidate.job_type),
                                   bytes=candidate.size, retry_in_s=delay)
                return None
            except BaseException:
                # Still in the inbox (rename failed) or in the spool: recover() decides which.
                with anyio.CancelScope(shield=True):
                    await recover_claiming(self.store, self.layout, row)
                raise
            self.backoff.succeeded(candidate)
            self.warnings.resolved(log, ("claim", str(candidate.path)), "inbox.claim_resumed",
                                   file=name)
            claimed = await self.store.move_input(
                row.id, [InputState.CLAIMING], InputState.CLAIMED, event="inbox.claimed",
                detail={"file": name, "bytes": candidate.size},
            )
            log.info("inbox.claimed", file=name, input_id=row.id,
                     job_type=str(candidate.job_type), bytes=candidate.size, out_stem=out_stem)
            await self._validate(claimed)
            return claimed
        finally:
            self._busy.discard(row.id)

    # ---- validation ---------------------------------------------------------------------

    async def validate(self, item: InputFile) -> None:
        self._busy.add(item.id)
        try:
            await self._validate(item)
        finally:
            self._busy.discard(item.id)

    async def _validate(self, item: InputFile) -> None:
        src = self.layout.spool / item.spool_name
        dest = self.layout.spool / item.copy_name  # written only if the body is not `src`
        work = functools.partial(read_and_normalise, src, dest, normalise=normalise_input,
                                 policy=self.invalid_lines, display_name=item.name,
                                 fmt=self.formats.get(item.job_type, "auto"),
                                 id_columns=self.id_columns)
        try:
            before, outcome, after = await anyio.to_thread.run_sync(work)
        except OSError as error:
            dest.unlink(missing_ok=True)
            if error.errno in _LOCAL_ERRNOS:
                # Our disk, not the input: keep it claimed; maintenance() validates it again.
                self.warnings.warn(log, ("validate", str(item.id)), "input.validation_deferred",
                                   error, file=item.name, input_id=item.id,
                                   retry="every rescan")
                return
            await self.reject(item, {"stage": "validation", "reason": "unreadable",
                                     "message": f"{item.name}: {type(error).__name__}: "
                                                f"{error.strerror or error}"})
            return
        bytes_read = outcome.input_bytes if isinstance(outcome, IdFileReport) else None
        change = still_changing(item, before, after, bytes_read, self.settle_s,
                                 self.store.clock.now().timestamp())
        if change is not None:
            # A producer still writing (no `.part` rename): its data lands in our copy. Never
            # queue what was read so far; wait until the file is quiet and read it again.
            dest.unlink(missing_ok=True)
            await self._wait_for_writer(item, after, change)
            return
        if isinstance(outcome, InputRejected):
            dest.unlink(missing_ok=True)
            await self.reject(item, {"stage": "validation", **outcome.details,
                                     "message": outcome.message})
            return
        if isinstance(outcome, UnicodeError):
            dest.unlink(missing_ok=True)
            await self.reject(item, {"stage": "validation", "reason": "unreadable",
                                     "message": f"{item.name}: {type(outcome).__name__}: "
                                                f"{outcome}"})
            return
        if outcome.body_is_input:
            dest.unlink(missing_ok=True)  # a copy from an earlier validation: not needed now
        self.warnings.resolved(log, ("validate", str(item.id)), "input.validation_resumed",
                               file=item.name)
        self.warnings.resolved(log, ("changing", str(item.id)), "input.stopped_changing",
                               file=item.name, input_id=item.id, bytes=after.st_size)
        # What was validated, to compare with before delivery (deliver.py).
        fields = {**self._validated_fields(outcome), "size_bytes": after.st_size,
                  "mtime_ns": after.st_mtime_ns, "ctime_ns": after.st_ctime_ns}
        if self.duplicate_content == "link" and await self.deduper.dedupe(item, fields):
            return
        await self._queue(item, fields)

    async def _wait_for_writer(self, item: InputFile, now: os.stat_result, change: str) -> None:
        if (item.size_bytes, item.mtime_ns, item.ctime_ns) != (
                now.st_size, now.st_mtime_ns, now.st_ctime_ns):
            await self.store.move_input(
                item.id, [InputState.CLAIMED], InputState.CLAIMED,
                event="input.changed_after_claim",
                detail={"file": item.name, "bytes_at_claim": item.size_bytes,
                        "bytes_now": now.st_size},
                size_bytes=now.st_size, mtime_ns=now.st_mtime_ns, ctime_ns=now.st_ctime_ns,
            )
        self.warnings.warn(
            log, ("changing", str(item.id)), "input.changed_after_claim",
            StillWritten(change), file=item.name, input_id=item.id,
            bytes_at_claim=item.size_bytes, bytes_now=now.st_size,
            action="not queued; validated again once it has stopped changing",
            hint="write as NAME.part and rename it when complete",
        )

    @staticmethod
    def _validated_fields(report: IdFileReport) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "ids": report.id_count, "dropped_lines": report.bad_line_count,
            # The upload body's hash: equal bodies give equal results (the link key).
            "body_sha256": report.output_sha256,
        }
        if report.bad_line_count:
            summary["bad_lines"] = [b.as_dict() for b in report.bad_lines]
        return {"input_sha256": report.input_sha256, "id_count": report.id_count,
                "bad_line_count": report.bad_line_count, "report_json": summary,
                "body_sha256": report.output_sha256}

    async def _queue(self, item: InputFile, fields: dict[str, Any]) -> None:
        await self.store.move_input(
            item.id, [InputState.CLAIMED], InputState.QUEUED, event="input.queued",
            detail={"ids": fields["id_count"]}, queued_at=self.store.clock.now(), **fields,
        )
        log.info("input.queued", file=item.name, input_id=item.id, job_type=str(item.job_type),
                 ids=fields["id_count"], dropped_lines=fields["bad_line_count"])
        self.on_queued()

    async def _continue(self, item: InputFile) -> None:
        """Carry on with a claimed input from what the database says about it."""
        report = item.report or {}
        if "link" in report:
            why = await self.deduper.finish_link(item)
            if why is None:
                return
            log.warning("input.link_unavailable", file=item.name, input_id=item.id,
                        reasons=[f"{report['link']['file']}: {why}"],
                        action="processing it as a new job")
            refreshed = await self.store.get_input(item.id)
            assert refreshed is not None
            if (self.layout.spool / item.ids_name).exists():
                await self._queue(refreshed, stored_fields(refreshed))
                return
            item, report = refreshed, {}
        spooled = self.layout.spool / item.spool_name
        if ("body_sha256" in report and (self.layout.spool / item.ids_name).exists()
                and not await anyio.to_thread.run_sync(
                    changed_since, spooled, item.size_bytes, item.mtime_ns, item.ctime_ns,
                    item.input_sha256)):
            fields = stored_fields(item)
            if self.duplicate_content == "link" and await self.deduper.dedupe(item, fields):
                return
            await self._queue(item, fields)
            return
        await self._validate(item)

    async def _continue_guarded(self, item: InputFile) -> None:
        """_continue for maintenance/recovery: local failures wait for the next round."""
        if item.id in self._busy:
            return
        self._busy.add(item.id)
        try:
            await self._continue(item)
        except StaleState:
            return  # someone else moved it on
        except OSError as error:
            self.warnings.warn(log, ("link", str(item.id)), "outbox.link_deferred", error,
                               file=item.name, input_id=item.id, retry="every rescan")
        finally:
            self._busy.discard(item.id)

    # ---- rejection (rejections.py) ------------------------------------------------------------

    async def reject(self, item: InputFile, error: dict[str, Any]) -> None:
        await self.rejections.reject(item, error)

    async def finish_rejection(self, input_id: int) -> bool:
        return await self.rejections.finish_rejection(input_id)

    async def reject_entry(self, entry: InvalidEntry) -> None:
        await self.rejections.reject_entry(entry)

    # ---- maintenance and recovery -----------------------------------------------------------

    async def maintenance(self, *, claims_before: datetime | None = None) -> None:
        """Called every rescan interval; never raises (it runs beside the whole daemon).

        Finishes what local trouble interrupted: rejections not yet moved, inbox entries not
        yet moved, links not yet written, validations the spool disk refused, and inputs
        waiting for a twin whose result is now delivered. With `claims_before` (a shared
        store), also the claims another host left in `claiming` before that time (it died).
        """
        try:
            if claims_before is not None:
                await self._recover_claiming(claims_before)
            await self.rejections.retry_pending()
            for item in await self.store.inputs_in([InputState.CLAIMED]):
                await self._continue_guarded(item)
        except Exception as error:  # a bug or a database hiccup: say so, try next round
            log.exception("intake.maintenance_failed", error=type(error).__name__)

    async def _recover_claiming(self, before: datetime | None) -> None:
        for item in await self.store.inputs_in([InputState.CLAIMING]):
            if before is None or (item.claimed_at is not None and item.claimed_at < before):
                try:
                    await recover_claiming(self.store, self.layout, item)
                except StaleState:
                    continue  # its host finished it meanwhile

    async def recover(self, *, claims_before: datetime | None = None) -> None:
        """Heal every crash window of claiming, validating, linking and rejecting. With
        `claims_before` (a shared store: other hosts claim too), only `claiming` rows older
        than that: a younger one may be another live host's claim in progress."""
        await self._recover_claiming(claims_before)
        for item in await self.store.inputs_in([InputState.CLAIMED]):
            await self._continue_guarded(item)
        for item in await self.store.inputs_in([InputState.REJECTED]):
            if (self.layout.spool / item.spool_name).exists():
                await self.finish_rejection(item.id)
        for item in await self.store.inputs_in([InputState.DELIVERED]):
            for leftover in (item.spool_name, item.copy_name):
                (self.layout.spool / leftover).unlink(missing_ok=True)
