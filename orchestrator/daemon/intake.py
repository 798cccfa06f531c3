"""From a stable inbox file to a queued input: claim, validate, link, or reject with a reason.

Claiming is ordered for kill -9 at any line: (1) a `claiming` row records the intent and the
inode, (2) the file is renamed into the spool, (3) the row becomes `claimed`. `recover()`
heals a crash between any two steps. Rejection writes the reason to the database first and
then moves the file, so a restart finishes a half-done rejection instead of losing the file.

With `inbox.duplicate_content = "link"`, an input whose normalised upload body (so CRLF and
LF copies match) equals that of an input of the same type already delivered gets a copy of
the earlier result instead of a new remote job. The link target is persisted in the input's
report before any file is written, so a crash mid-link is finished (or undone into normal
processing) at the next start, and the input's one outbox name is written at most once over.

Local trouble (an outbox that cannot be written, a full spool disk) never rejects or loses an
input: the work is left where the database says it is and `maintenance()` retries it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import secrets
import stat
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import anyio
import structlog

from orchestrator.clock import iso
from orchestrator.core.model import InputFile, InputState, JobType
from orchestrator.errors import InputRejected
from orchestrator.files.atomic import (
    NAME_MAX_BYTES,
    atomic_copy_verified,
    atomic_output,
    atomic_write_json,
    file_sha256,
    fsync_dir,
    truncate_name,
)
from orchestrator.files.idfile import IdFileReport, Policy, normalise_id_file
from orchestrator.files.inbox import NOT_IN_TYPE_FOLDER, Candidate, InvalidEntry
from orchestrator.files.link import link_intent, linked_manifest
from orchestrator.files.rejected import reject_file
from orchestrator.layout import Layout
from orchestrator.redact import redact_text
from orchestrator.store.sqlite import StaleState, Store

log = structlog.get_logger(__name__)

DuplicatePolicy = Literal["process", "link"]

MANIFEST_SUFFIX = ".manifest.json"
# Room for the longest outbox suffix plus a "-<n>" that keeps stems unique.
_STEM_MAX_BYTES = NAME_MAX_BYTES - len(MANIFEST_SUFFIX) - 8
# Write-side failures: the state dir's problem, not the input's; retried, never rejected.
_LOCAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EMFILE, errno.ENFILE})
_IN_FLIGHT = (InputState.QUEUED, InputState.BATCHED)


def display_name(name: str) -> str:
    """A file name as text SQLite, JSON and logs accept: undecodable bytes become `\\xNN`."""
    return os.fsencode(name).decode("utf-8", errors="backslashreplace")


def _stem(name: str) -> str:
    stem = Path(name).stem
    stem = stem if stem and not stem.startswith(".") else name
    # `<stem>.manifest.json` must fit in NAME_MAX, or delivery would fail forever.
    return truncate_name(stem, _STEM_MAX_BYTES)


def _entry_reason(entry: InvalidEntry) -> str:
    if entry.reason == NOT_IN_TYPE_FOLDER:
        return "not_in_type_folder"
    if entry.reason == "no read permission":
        return "unreadable"
    return "not_a_regular_file"


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
        self.link_max_age_s = link_max_age_s
        self.on_queued = on_queued
        self._busy: set[int] = set()  # inputs a task is working on right now
        self._unclaimable: set[tuple[str, int, int]] = set()  # (path, inode, size)
        self._deferred_rejections: set[int] = set()  # rejected inputs still in the spool
        self._pending_entries: dict[Path, InvalidEntry] = {}  # entries we failed to move
        self._warned: dict[tuple[str, str], str] = {}  # (kind, key) -> last message logged
        self._reject_lock = anyio.Lock()  # one mover at a time: runner, scan and maintenance

    # ---- logging helpers ----------------------------------------------------------------

    def _warn_once(self, key: tuple[str, str], event: str, error: BaseException,
                   **fields: Any) -> None:
        """A warning per problem, not per retry; repeats of the same failure go to debug."""
        message = redact_text(str(error))
        # Same kind of failure = same problem, even if the message names another temp file.
        kind = f"{type(error).__name__}:{getattr(error, 'errno', None) or message}"
        level = "debug" if self._warned.get(key) == kind else "warning"
        self._warned[key] = kind
        getattr(log, level)(event, error=type(error).__name__, error_msg=message, **fields)

    def _resolved(self, key: tuple[str, str], event: str, **fields: Any) -> None:
        if self._warned.pop(key, None) is not None:
            log.info(event, **fields)

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
        spool_name = f"{secrets.token_hex(8)}.{candidate.job_type}"
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
                self._warn_once(("validate", str(item.id)), "input.validation_deferred", error,
                                file=item.name, input_id=item.id, retry="every rescan")
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
        self._resolved(("validate", str(item.id)), "input.validation_resumed", file=item.name)
        fields = self._validated_fields(report)
        if self.duplicate_content == "link" and await self._dedupe(item, fields):
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

    @staticmethod
    def _stored_fields(item: InputFile) -> dict[str, Any]:
        report = {k: v for k, v in (item.report or {}).items()
                  if k not in ("waiting_for", "link")}
        return {"input_sha256": item.input_sha256, "id_count": item.id_count,
                "bad_line_count": item.bad_line_count, "report_json": report,
                "body_sha256": item.body_sha256 or report.get("body_sha256")}

    async def _queue(self, item: InputFile, fields: dict[str, Any]) -> None:
        await self.store.move_input(
            item.id, [InputState.CLAIMED], InputState.QUEUED, event="input.queued",
            detail={"ids": fields["id_count"]}, queued_at=self.store.clock.now(), **fields,
        )
        log.info("input.queued", file=item.name, input_id=item.id, job_type=str(item.job_type),
                 ids=fields["id_count"], dropped_lines=fields["bad_line_count"])
        self.on_queued()

    # ---- duplicate content ----------------------------------------------------------------

    async def _twins(self, item: InputFile, body_sha256: str) -> list[InputFile]:
        """Other inputs of the same type with the same upload body (not rejected ones)."""
        return await self.store.twins_of(item.job_type, body_sha256, item.id)

    async def _dedupe(self, item: InputFile, fields: dict[str, Any]) -> bool:
        """Link to an earlier delivered twin, or wait for one in flight: True if handled."""
        twins = await self._twins(item, fields["report_json"]["body_sha256"])
        # Compliance status changes over time: only a recent enough result is reused.
        fresh_since = self.store.clock.now() - timedelta(seconds=self.link_max_age_s)
        delivered = sorted((t for t in twins if t.state is InputState.DELIVERED
                            and t.finished_at is not None and t.finished_at >= fresh_since),
                           key=lambda t: (iso(t.finished_at) or "", t.id), reverse=True)
        unusable: list[str] = []
        for twin in delivered:
            intent, why = await anyio.to_thread.run_sync(link_intent, self.layout, twin)
            if intent is not None:
                report = {**fields["report_json"], "link": intent}
                linking = await self.store.move_input(
                    item.id, [InputState.CLAIMED], InputState.CLAIMED, event="input.linking",
                    detail={"twin_input_id": twin.id, "twin_file": twin.name},
                    **{**fields, "report_json": report},
                )
                try:
                    failed = await self._finish_link(linking)
                except OSError as error:
                    # Intent persisted: maintenance() finishes the link once the outbox works.
                    self._warn_once(("link", str(item.id)), "outbox.link_deferred", error,
                                    file=item.name, input_id=item.id, retry="every rescan")
                    return True
                if failed is None:
                    return True
                why = failed  # the earlier result changed under us: try an older twin
            unusable.append(f"{twin.name}: {why}")
        # Only an earlier twin is waited for: two copies never wait for each other.
        in_flight = [t for t in twins if t.state in _IN_FLIGHT
                     or (t.state is InputState.CLAIMED and t.id < item.id)]
        if in_flight:
            await self._wait_for_twin(item, fields, in_flight[0])
            return True
        if unusable:
            log.warning("input.link_unavailable", file=item.name, input_id=item.id,
                        reasons=unusable, action="processing it as a new job")
        return False

    async def _wait_for_twin(self, item: InputFile, fields: dict[str, Any],
                             twin: InputFile) -> None:
        if (item.report or {}).get("waiting_for") == twin.id:
            return  # already recorded; nothing new to say
        report = {**fields["report_json"], "waiting_for": twin.id}
        await self.store.move_input(
            item.id, [InputState.CLAIMED], InputState.CLAIMED, event="input.waiting_for_twin",
            detail={"twin_input_id": twin.id, "twin_file": twin.name},
            **{**fields, "report_json": report},
        )
        log.info("input.waiting_for_twin", file=item.name, input_id=item.id,
                 twin_file=twin.name, twin_input_id=twin.id,
                 why="same content is being processed; its result will be linked")

    async def _finish_link(self, item: InputFile) -> str | None:
        """Write the linked result + manifest and mark the input delivered (idempotent).

        None when done. If the earlier result is gone or changed and no complete copy of it
        exists yet, the intent is dropped and the reason returned: the caller processes the
        input the normal way (or tries another twin). OSError (outbox not writable)
        propagates, and the intent stays for a retry.
        """
        intent = (item.report or {})["link"]
        dest = self.layout.results_path(item.job_type, item.out_stem)
        source = self.layout.outbox_for(item.job_type) / intent["results"]
        expected = intent["output_sha256"]

        def place() -> bool:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                if file_sha256(dest) == expected:
                    return True  # copied before a crash
            return atomic_copy_verified(source, dest, expected)

        if not await anyio.to_thread.run_sync(place):
            why = f"{intent['results']} was changed or removed from the outbox"
            await self.store.move_input(
                item.id, [InputState.CLAIMED], InputState.CLAIMED, event="input.link_abandoned",
                detail={"reason": why}, **self._stored_fields(item),
            )
            return why
        now = self.store.clock.now()
        manifest = linked_manifest(item, intent, dest, now)
        await anyio.to_thread.run_sync(
            atomic_write_json, self.layout.manifest_path(item.job_type, item.out_stem), manifest
        )
        await self.store.move_input(
            item.id, [InputState.CLAIMED], InputState.DELIVERED, event="outbox.linked",
            detail={"twin_input_id": intent["input_id"], "results": dest.name},
        )
        for leftover in (item.spool_name, item.ids_name):
            (self.layout.spool / leftover).unlink(missing_ok=True)
        self._resolved(("link", str(item.id)), "outbox.link_resumed", file=item.name)
        log.info("outbox.linked", file=item.name, input_id=item.id,
                 job_type=str(item.job_type), results=dest.name, linked_file=intent["file"],
                 linked_input_id=intent["input_id"], affected=intent["affected"])
        return None

    async def _continue(self, item: InputFile) -> None:
        """Carry on with a claimed input from what the database says about it."""
        report = item.report or {}
        if "link" in report:
            why = await self._finish_link(item)
            if why is None:
                return
            log.warning("input.link_unavailable", file=item.name, input_id=item.id,
                        reasons=[f"{report['link']['file']}: {why}"],
                        action="processing it as a new job")
            refreshed = await self.store.get_input(item.id)
            assert refreshed is not None
            if (self.layout.spool / item.ids_name).exists():
                await self._queue(refreshed, self._stored_fields(refreshed))
                return
            item, report = refreshed, {}
        if "body_sha256" in report and (self.layout.spool / item.ids_name).exists():
            fields = self._stored_fields(item)
            if self.duplicate_content == "link" and await self._dedupe(item, fields):
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
            self._warn_once(("link", str(item.id)), "outbox.link_deferred", error,
                            file=item.name, input_id=item.id, retry="every rescan")
        finally:
            self._busy.discard(item.id)

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

    async def finish_rejection(self, input_id: int) -> bool:
        """Move a rejected input's file to outbox/rejected (idempotent).

        False if it could not be moved (e.g. the outbox is not writable): the file stays in
        the spool, its reason in the database, and `maintenance()` tries again.
        """
        async with self._reject_lock:
            item = await self.store.get_input(input_id)
            if item is None or item.state is not InputState.REJECTED:
                self._deferred_rejections.discard(input_id)
                return True
            src = self.layout.spool / item.spool_name
            (self.layout.spool / item.ids_name).unlink(missing_ok=True)
            if not src.exists():
                self._deferred_rejections.discard(input_id)
                return True
            document = item.error or {}
            try:
                placed = await anyio.to_thread.run_sync(
                    reject_file, src, self.layout.rejected, item.name, document
                )
            except OSError as error:
                self._deferred_rejections.add(input_id)
                self._warn_once(("reject", str(input_id)), "outbox.reject_deferred", error,
                                file=item.name, input_id=input_id, retry="every rescan",
                                reason=document.get("reason"))
                return False
            self._deferred_rejections.discard(input_id)
            self._resolved(("reject", str(input_id)), "outbox.reject_resumed", file=item.name)
            log.error("input.rejected", file=item.name, input_id=item.id,
                      job_type=str(item.job_type), reason=document.get("reason"),
                      stage=document.get("stage"), error_msg=document.get("message"),
                      rejected_as=placed.name)
            return True

    async def reject_entry(self, entry: InvalidEntry) -> None:
        """Something in the inbox that cannot be an input (symlink, fifo, folder, stray file,
        unreadable file): moved as it is, never followed or opened, to outbox/rejected."""
        async with self._reject_lock:
            await self._reject_entry(entry)

    async def _reject_entry(self, entry: InvalidEntry) -> None:
        try:
            st = os.lstat(entry.path)
        except FileNotFoundError:
            self._pending_entries.pop(entry.path, None)
            return
        if entry.inode and st.st_ino != entry.inode:
            self._pending_entries.pop(entry.path, None)
            return  # replaced since the scan: the new entry gets its own quiet period
        name = display_name(entry.path.name)
        error = {"file": name, "stage": "inbox", "reason": _entry_reason(entry),
                 "message": f"{name}: {entry.reason}",
                 "job_type": str(entry.job_type) if entry.job_type else None}
        key = ("entry", str(entry.path))
        try:
            placed = await anyio.to_thread.run_sync(
                reject_file, entry.path, self.layout.rejected, name, error
            )
        except FileNotFoundError:
            self._pending_entries.pop(entry.path, None)
            return
        except OSError as failure:
            # Not writable, another filesystem (EXDEV for folders and fifos), ...: left in
            # place, said once, tried again every rescan.
            self._pending_entries[entry.path] = entry
            self._warn_once(key, "inbox.reject_deferred", failure, file=name,
                            reason=entry.reason, retry="every rescan")
            return
        self._pending_entries.pop(entry.path, None)
        self._resolved(key, "inbox.reject_resumed", file=name)
        log.error("input.rejected", file=name, reason=entry.reason, stage="inbox",
                  job_type=str(entry.job_type) if entry.job_type else None,
                  rejected_as=placed.name)

    # ---- maintenance and recovery -----------------------------------------------------------

    async def maintenance(self) -> None:
        """Called every rescan interval; never raises (it runs beside the whole daemon).

        Finishes what local trouble interrupted: rejections not yet moved, inbox entries not
        yet moved, links not yet written, validations the spool disk refused, and inputs
        waiting for a twin whose result is now delivered.
        """
        try:
            for input_id in sorted(self._deferred_rejections):
                await self.finish_rejection(input_id)
            # Rejections recorded by someone else (an operator's `cancel` that died before
            # moving the files) are finished here too.
            for item in await self.store.inputs_in([InputState.REJECTED]):
                if (item.id not in self._deferred_rejections
                        and (self.layout.spool / item.spool_name).exists()):
                    await self.finish_rejection(item.id)
            for entry in list(self._pending_entries.values()):
                await self.reject_entry(entry)
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
