"""From a stable inbox file to a queued input: claim, validate, then link or queue it.

Claiming is ordered for kill -9 at any line: (1) a `claiming` row records the intent and the
inode, (2) the file is renamed into the spool, (3) the row becomes `claimed`. `recover()`
heals a crash between any two steps. Rejection writes the reason to the database first and
then moves the file, so a restart finishes a half-done rejection instead of losing the file.

Duplicate content is dedupe.py's job (link to an earlier result); moving a rejected file to
outbox/rejected/ is rejections.py's.

Local trouble (an outbox that cannot be written, a full spool disk) never rejects or loses an
input: the work is left where the database says it is and `maintenance()` retries it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import structlog

from orchestrator.core.model import InputFile, InputState, JobType
from orchestrator.daemon.dedupe import Deduper, DuplicatePolicy, stored_fields
from orchestrator.daemon.rejections import Rejections
from orchestrator.errors import InputRejected
from orchestrator.files.atomic import (
    NAME_MAX_BYTES,
    atomic_output,
    fsync_dir,
    truncate_name,
)
from orchestrator.files.idfile import IdFileReport, Policy, normalise_id_file
from orchestrator.files.inbox import Candidate, InvalidEntry, display_name
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


class _Replaced(Exception):
    """The inbox name now holds another file than the one found stable."""


class _Unclaimable(Exception):
    """Copied across filesystems, but the original cannot be removed from the inbox (the
    daemon may not write that folder): claiming it would process it again on every scan."""


class Intake:
    def __init__(
        self, store: Store, layout: Layout, *, invalid_lines: Policy = "reject",
        duplicate_content: DuplicatePolicy = "process", link_max_age_s: float = 86400.0,
        on_queued: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.layout = layout
        self.invalid_lines = invalid_lines
        self.duplicate_content = duplicate_content
        self.on_queued = on_queued
        self.warnings = WarnOnce()
        self.deduper = Deduper(store, layout, link_max_age_s=link_max_age_s,
                               warnings=self.warnings)
        self.rejections = Rejections(store, layout, self.warnings)
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
        unclaimable = (str(candidate.path), candidate.inode, candidate.size)
        if unclaimable in self._unclaimable:
            return None  # reported once already; a changed file gets another try
        out_stem = await self._choose_out_stem(candidate.job_type, name)
        spool_name = InputFiles.new_name(candidate.job_type)
        row = await self.store.insert_claiming(
            job_type=candidate.job_type, name=name, out_stem=out_stem, spool_name=spool_name,
            inode=candidate.inode, size_bytes=candidate.size,
        )
        self._busy.add(row.id)
        try:
            target = self.layout.spool / spool_name
            try:
                await anyio.to_thread.run_sync(
                    self._move_into_spool, candidate.path, target, candidate.inode
                )
            except _Unclaimable as stuck:
                self._unclaimable.add(unclaimable)
                await self.store.delete_claiming(row.id, "cannot remove it from the inbox")
                log.error("inbox.unclaimable", file=name, job_type=str(candidate.job_type),
                          error_msg=redact_text(str(stuck.args[0])),
                          hint="the daemon must be able to delete files in the inbox folder")
                return None
            except (FileNotFoundError, _Replaced) as gone:
                replaced = isinstance(gone, _Replaced)
                reason = ("replaced since it was found; checked again once stable" if replaced
                          else "file vanished before it was claimed")
                await self.store.delete_claiming(row.id, reason)
                log.info("inbox.claim_skipped", file=name, job_type=str(candidate.job_type),
                         reason=reason)
                return None
            except BaseException:
                # Still in the inbox (rename failed) or in the spool: recover() decides which.
                with anyio.CancelScope(shield=True):
                    await self._recover_claiming(row)
                raise
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

    @staticmethod
    def _move_into_spool(source: Path, target: Path, inode: int) -> None:
        # A producer may have renamed another file over the name since the scan: claim only
        # the file that was seen stable (the new one gets its own quiet period).
        if os.lstat(source).st_ino != inode:
            raise _Replaced
        try:
            source.rename(target)
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise
            Intake._copy_into_spool(source, target, inode)
        fsync_dir(target.parent)

    @staticmethod
    def _copy_into_spool(source: Path, target: Path, inode: int) -> None:
        """Inbox and state dir on different filesystems: copy durably, then remove the
        original, but only if the name still holds the file we copied."""
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as inp:
            st = os.fstat(inp.fileno())
            if st.st_ino != inode or not stat.S_ISREG(st.st_mode):
                raise _Replaced
            with atomic_output(target) as out:
                while block := inp.read(1 << 20):
                    out.write(block)
        try:
            if os.lstat(source).st_ino == inode:
                source.unlink()
                fsync_dir(source.parent)
        except FileNotFoundError:
            pass
        except OSError as error:
            target.unlink(missing_ok=True)
            raise _Unclaimable(error) from None

    # ---- validation ---------------------------------------------------------------------

    async def validate(self, item: InputFile) -> None:
        self._busy.add(item.id)
        try:
            await self._validate(item)
        finally:
            self._busy.discard(item.id)

    async def _validate(self, item: InputFile) -> None:
        src = self.layout.spool / item.spool_name
        dest = self.layout.spool / item.ids_name
        work = functools.partial(normalise_id_file, src, dest, policy=self.invalid_lines,
                                 display_name=item.name)
        try:
            report = await anyio.to_thread.run_sync(work)
        except InputRejected as rejected:
            dest.unlink(missing_ok=True)
            await self.reject(item, {"stage": "validation", **rejected.details,
                                     "message": rejected.message})
            return
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
        except UnicodeError as error:
            dest.unlink(missing_ok=True)
            await self.reject(item, {"stage": "validation", "reason": "unreadable",
                                     "message": f"{item.name}: {type(error).__name__}: {error}"})
            return
        self.warnings.resolved(log, ("validate", str(item.id)), "input.validation_resumed",
                               file=item.name)
        fields = self._validated_fields(report)
        if self.duplicate_content == "link" and await self.deduper.dedupe(item, fields):
            return
        await self._queue(item, fields)

    @staticmethod
    def _validated_fields(report: IdFileReport) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "ids": report.id_count, "dropped_lines": report.bad_line_count,
            # The upload body's hash: equal bodies give equal results (the link key).
            "body_sha256": report.output_sha256,
        }
        if report.bad_line_count:
            summary["bad_lines"] = [
                {"line": b.line_no, "reason": b.reason, "excerpt": b.excerpt}
                for b in report.bad_lines
            ]
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
        if "body_sha256" in report and (self.layout.spool / item.ids_name).exists():
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

    async def maintenance(self) -> None:
        """Called every rescan interval; never raises (it runs beside the whole daemon).

        Finishes what local trouble interrupted: rejections not yet moved, inbox entries not
        yet moved, links not yet written, validations the spool disk refused, and inputs
        waiting for a twin whose result is now delivered.
        """
        try:
            await self.rejections.retry_pending()
            for item in await self.store.inputs_in([InputState.CLAIMED]):
                await self._continue_guarded(item)
        except Exception as error:  # a bug or a database hiccup: say so, try next round
            log.exception("intake.maintenance_failed", error=type(error).__name__)

    async def recover(self) -> None:
        """Heal every crash window of claiming, validating, linking and rejecting."""
        for item in await self.store.inputs_in([InputState.CLAIMING]):
            await self._recover_claiming(item)
        for item in await self.store.inputs_in([InputState.CLAIMED]):
            await self._continue_guarded(item)
        for item in await self.store.inputs_in([InputState.REJECTED]):
            if (self.layout.spool / item.spool_name).exists():
                await self.finish_rejection(item.id)
        for item in await self.store.inputs_in([InputState.DELIVERED]):
            for leftover in (item.spool_name, item.ids_name):
                (self.layout.spool / leftover).unlink(missing_ok=True)

    async def _recover_claiming(self, item: InputFile) -> None:
        spooled = self.layout.spool / item.spool_name
        original = self.layout.inbox_for(item.job_type) / item.name
        original_stat = None
        with contextlib.suppress(OSError):
            original_stat = original.lstat()
        spooled_stat = None
        with contextlib.suppress(FileNotFoundError):
            spooled_stat = spooled.stat()
        if spooled_stat is not None:
            # The rename, or the atomic cross-filesystem copy, completed: the spooled file is
            # whole. Never delete it; drop the inbox original only if it is the copied file.
            if (original_stat is not None and original_stat.st_ino == item.inode
                    and spooled_stat.st_ino != item.inode
                    and original_stat.st_size == spooled_stat.st_size):
                try:
                    original.unlink()
                except OSError as error:  # cannot remove it: undo the claim, say so once
                    spooled.unlink(missing_ok=True)
                    await self.store.delete_claiming(item.id, "cannot remove it from the inbox")
                    log.error("inbox.unclaimable", file=item.name, error_msg=str(error))
                    return
            await self.store.move_input(item.id, [InputState.CLAIMING], InputState.CLAIMED,
                                        event="inbox.claimed", detail={"recovered": True})
            log.info("inbox.claim_recovered", file=item.name, input_id=item.id)
            return
        same_original = original_stat is not None and original_stat.st_ino == item.inode
        reason = ("claim interrupted; the file stays in the inbox" if same_original
                  else "file vanished before it was claimed")
        await self.store.delete_claiming(item.id, reason)
        log.warning("inbox.claim_undone", file=item.name, reason=reason)
