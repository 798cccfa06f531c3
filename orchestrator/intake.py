"""From a stable inbox file to a queued input: claim, validate, or reject with a reason.

Claiming is ordered for kill -9 at any line: (1) a `claiming` row records the intent and the
inode, (2) the file is renamed into the spool, (3) the row becomes `claimed`. `recover()`
heals a crash between any two steps. Rejection writes the reason to the database first and
then moves the file, so a restart finishes a half-done rejection instead of losing the file.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import structlog

from orchestrator.clock import iso
from orchestrator.errors import InputRejected
from orchestrator.idfile import normalise_id_file
from orchestrator.inbox import Candidate, InvalidEntry
from orchestrator.layout import Layout
from orchestrator.model import InputFile, InputState, JobType
from orchestrator.outbox import atomic_write_file, fsync_dir, reject_file
from orchestrator.store import Store

log = structlog.get_logger(__name__)


def _stem(name: str) -> str:
    stem = Path(name).stem
    return stem if stem and not stem.startswith(".") else name


class Intake:
    def __init__(
        self, store: Store, layout: Layout, *, invalid_lines: str = "reject",
        on_queued: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.layout = layout
        self.invalid_lines = invalid_lines
        self.on_queued = on_queued
        self._unmovable: set[tuple[str, int]] = set()

    # ---- claiming -----------------------------------------------------------------------

    async def _choose_out_stem(self, job_type: JobType, name: str) -> str:
        base = _stem(name)
        candidate, n = base, 1
        while await self.store.out_stem_taken(job_type, candidate) or any(
            p.exists() for p in (self.layout.results_path(job_type, candidate),
                                 self.layout.manifest_path(job_type, candidate))
        ):
            n += 1
            candidate = f"{base}-{n}"
        return candidate

    async def claim(self, candidate: Candidate) -> InputFile | None:
        name = candidate.path.name
        out_stem = await self._choose_out_stem(candidate.job_type, name)
        spool_name = f"{secrets.token_hex(8)}.{candidate.job_type}"
        row = await self.store.insert_claiming(
            job_type=candidate.job_type, name=name, out_stem=out_stem, spool_name=spool_name,
            inode=candidate.inode, size_bytes=candidate.size,
        )
        target = self.layout.spool / spool_name
        try:
            await anyio.to_thread.run_sync(self._move_into_spool, candidate.path, target)
        except FileNotFoundError:
            await self.store.delete_claiming(row.id, "file vanished before it was claimed")
            log.warning("inbox.vanished", file=name, job_type=str(candidate.job_type))
            return None
        claimed = await self.store.move_input(
            row.id, [InputState.CLAIMING], InputState.CLAIMED, event="inbox.claimed",
            detail={"file": name, "bytes": candidate.size},
        )
        log.info("inbox.claimed", file=name, input_id=row.id, job_type=str(candidate.job_type),
                 bytes=candidate.size, out_stem=out_stem)
        await self.validate(claimed)
        return claimed

    @staticmethod
    def _move_into_spool(source: Path, target: Path) -> None:
        try:
            source.rename(target)
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise
            # Inbox and state dir on different filesystems: copy durably, then remove the
            # original. recover() finishes the removal if we die in between.
            atomic_write_file(target, source)
            source.unlink()
        fsync_dir(target.parent)

    # ---- validation ---------------------------------------------------------------------

    async def validate(self, item: InputFile) -> None:
        src = self.layout.spool / item.spool_name
        dest = self.layout.spool / item.ids_name
        work = functools.partial(normalise_id_file, src, dest, policy=self.invalid_lines,
                                 display_name=item.name)
        try:
            report = await anyio.to_thread.run_sync(work)
        except InputRejected as rejected:
            dest.unlink(missing_ok=True)
            message = rejected.message
            await self.reject(item, {"stage": "validation", **rejected.details, "message": message})
            return
        except (UnicodeError, OSError) as error:
            dest.unlink(missing_ok=True)
            await self.reject(item, {"stage": "validation", "reason": "unreadable",
                                     "message": f"{item.name}: {type(error).__name__}: {error}"})
            return
        summary: dict[str, Any] = {"ids": report.id_count, "dropped_lines": report.bad_line_count}
        if report.bad_line_count:
            summary["bad_lines"] = [
                {"line": b.line_no, "reason": b.reason, "excerpt": b.excerpt}
                for b in report.bad_lines
            ]
        await self.store.move_input(
            item.id, [InputState.CLAIMED], InputState.QUEUED, event="input.queued",
            detail={"ids": report.id_count}, input_sha256=report.input_sha256,
            id_count=report.id_count, bad_line_count=report.bad_line_count,
            report_json=summary, queued_at=self.store.clock.now(),
        )
        log.info("input.queued", file=item.name, input_id=item.id, job_type=str(item.job_type),
                 ids=report.id_count, dropped_lines=report.bad_line_count)
        self.on_queued()

    # ---- rejection ------------------------------------------------------------------------

    def _error_document(self, item: InputFile, error: dict[str, Any]) -> dict[str, Any]:
        return {
            "file": item.name, "job_type": str(item.job_type), "input_id": item.id,
            "claimed_at": iso(item.claimed_at), **error,
        }

    async def reject(self, item: InputFile, error: dict[str, Any]) -> None:
        document = self._error_document(item, error)
        await self.store.move_input(
            item.id, [InputState.CLAIMED, InputState.QUEUED], InputState.REJECTED,
            event="input.rejected", detail={"reason": error.get("reason")},
            error_json=document,
        )
        await self.finish_rejection(item.id)

    async def finish_rejection(self, input_id: int) -> None:
        """Move a rejected input's file to outbox/rejected (idempotent)."""
        item = await self.store.get_input(input_id)
        if item is None or item.state is not InputState.REJECTED:
            return
        src = self.layout.spool / item.spool_name
        (self.layout.spool / item.ids_name).unlink(missing_ok=True)
        if not src.exists():
            return
        document = item.error or {}
        placed = await anyio.to_thread.run_sync(
            reject_file, src, self.layout.rejected, item.name, document
        )
        log.error("input.rejected", file=item.name, input_id=item.id,
                  job_type=str(item.job_type), reason=document.get("reason"),
                  stage=document.get("stage"), error_msg=document.get("message"),
                  rejected_as=placed.name)

    async def reject_entry(self, entry: InvalidEntry) -> None:
        """Something in the inbox that cannot be an input (symlink, fifo, folder, stray file)."""
        key = (str(entry.path), entry.path.lstat().st_ino if entry.path.is_symlink()
               or entry.path.exists() else 0)
        if key in self._unmovable:
            return
        error = {"file": entry.path.name, "stage": "inbox", "reason": "not_a_regular_file",
                 "message": f"{entry.path.name}: {entry.reason}",
                 "job_type": str(entry.job_type) if entry.job_type else None}
        try:
            placed = await anyio.to_thread.run_sync(
                reject_file, entry.path, self.layout.rejected, entry.path.name, error
            )
        except FileNotFoundError:
            return
        except OSError as failure:
            self._unmovable.add(key)
            log.error("inbox.unmovable", file=entry.path.name, reason=entry.reason,
                      error=type(failure).__name__, error_msg=str(failure))
            return
        log.error("input.rejected", file=entry.path.name, reason=entry.reason, stage="inbox",
                  rejected_as=placed.name)

    async def maintenance(self) -> None:
        """Called every rescan interval: finish rejections that could not be moved earlier
        (e.g. the outbox was not writable). Nothing is lost meanwhile: the file stays in the
        spool and its reason in the database."""
        for item in await self.store.inputs_in([InputState.REJECTED]):
            if (self.layout.spool / item.spool_name).exists():
                try:
                    await self.finish_rejection(item.id)
                except OSError as error:
                    log.warning("outbox.reject_retry_failed", file=item.name,
                                error=type(error).__name__, error_msg=str(error))

    # ---- recovery -------------------------------------------------------------------------

    async def recover(self) -> None:
        """Heal every crash window of claiming, validating and rejecting."""
        for item in await self.store.inputs_in([InputState.CLAIMING]):
            await self._recover_claiming(item)
        for item in await self.store.inputs_in([InputState.CLAIMED]):
            await self.validate(item)
        for item in await self.store.inputs_in([InputState.REJECTED]):
            await self.finish_rejection(item.id)
        for item in await self.store.inputs_in([InputState.DELIVERED]):
            for leftover in (item.spool_name, item.ids_name):
                (self.layout.spool / leftover).unlink(missing_ok=True)

    async def _recover_claiming(self, item: InputFile) -> None:
        spooled = self.layout.spool / item.spool_name
        original = self.layout.inbox_for(item.job_type) / item.name
        original_stat = None
        with contextlib.suppress(FileNotFoundError):
            original_stat = original.lstat()
        same_original = original_stat is not None and original_stat.st_ino == item.inode
        if spooled.exists() and (
            spooled.stat().st_ino == item.inode or spooled.stat().st_size == item.size_bytes
        ):
            if same_original and spooled.stat().st_ino != item.inode:
                original.unlink()  # the cross-filesystem copy finished; drop the original
            await self.store.move_input(item.id, [InputState.CLAIMING], InputState.CLAIMED,
                                        event="inbox.claimed", detail={"recovered": True})
            log.info("inbox.claim_recovered", file=item.name, input_id=item.id)
            return
        spooled.unlink(missing_ok=True)  # a partial cross-filesystem copy
        reason = ("claim interrupted; the file stays in the inbox" if same_original
                  else "file vanished before it was claimed")
        await self.store.delete_claiming(item.id, reason)
        log.warning("inbox.claim_undone", file=item.name, reason=reason)
