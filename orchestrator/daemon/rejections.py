"""Rejected inputs: the reason goes to the database first, then the file to outbox/rejected/.

A restart (or `retry_pending`, every rescan) finishes a half-done rejection instead of losing
the file. Local trouble (an outbox that cannot be written) never loses an input: the file
stays in the spool, or the entry in the inbox, and is moved once the outbox works again.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import structlog

from orchestrator.clock import iso
from orchestrator.core.model import InputFile, InputState
from orchestrator.files.atomic import DEFAULT_MIN_FREE_BYTES
from orchestrator.files.inbox import NOT_IN_TYPE_FOLDER, InvalidEntry, display_name
from orchestrator.files.rejected import reject_file
from orchestrator.layout import Layout
from orchestrator.logs import WarnOnce
from orchestrator.store.sqlite import Store

log = structlog.get_logger(__name__)


def _entry_reason(entry: InvalidEntry) -> str:
    if entry.reason == NOT_IN_TYPE_FOLDER:
        return "not_in_type_folder"
    if entry.reason == "no read permission":
        return "unreadable"
    if entry.reason.startswith("too large"):
        return "too_large"
    return "not_a_regular_file"


class Rejections:
    """Moves rejected inputs and unusable inbox entries to outbox/rejected/ (one at a time)."""

    def __init__(self, store: Store, layout: Layout, warnings: WarnOnce, *,
                 min_free: int = DEFAULT_MIN_FREE_BYTES,
                 on_rejected: Callable[[str, str], None] = lambda job_type, reason: None,
                 ) -> None:
        self.store = store
        # (job_type or "none", reason code): once per input or entry rejected at intake.
        self.on_rejected = on_rejected
        self.min_free = min_free  # a copy across filesystems must leave this much free
        self.layout = layout
        self.warnings = warnings
        self._deferred_rejections: set[int] = set()  # rejected inputs still in the spool
        self._pending_entries: dict[Path, InvalidEntry] = {}  # entries we failed to move
        self._reject_lock = anyio.Lock()  # one mover at a time: runner, scan and maintenance

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
        self.on_rejected(str(item.job_type), str(error.get("reason") or "unknown"))
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
            (self.layout.spool / item.copy_name).unlink(missing_ok=True)
            if not src.exists():
                self._deferred_rejections.discard(input_id)
                return True
            document = item.error or {}
            try:
                placed = await anyio.to_thread.run_sync(
                    functools.partial(reject_file, clock=self.store.clock, min_free=self.min_free),
                    src, self.layout.rejected, item.name, document,
                )
            except OSError as error:
                self._deferred_rejections.add(input_id)
                self.warnings.warn(log, ("reject", str(input_id)), "outbox.reject_deferred", error,
                                   file=item.name, input_id=input_id, retry="every rescan",
                                   reason=document.get("reason"))
                return False
            self._deferred_rejections.discard(input_id)
            self.warnings.resolved(log, ("reject", str(input_id)), "outbox.reject_resumed",
                                   file=item.name)
            log.error("input.rejected", file=item.name, input_id=item.id,
                      job_type=str(item.job_type), reason=document.get("reason"),
                      stage=document.get("stage"), error_msg=document.get("message"),
                      rejected_as=placed.name)
            return True

    def is_pending(self, path: Path) -> bool:
        """An inbox entry whose move failed for local reasons; `retry_pending` retries it."""
        return path in self._pending_entries

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
        reason = _entry_reason(entry)
        error = {"file": name, "stage": "inbox", "reason": reason,
                 "message": f"{name}: {entry.reason}",
                 "job_type": str(entry.job_type) if entry.job_type else None}
        key = ("entry", str(entry.path))
        try:
            placed = await anyio.to_thread.run_sync(
                functools.partial(reject_file, clock=self.store.clock, min_free=self.min_free),
                entry.path, self.layout.rejected, name, error,
            )
        except FileNotFoundError:
            self._pending_entries.pop(entry.path, None)
            return
        except OSError as failure:
            # Not writable, another filesystem (EXDEV for folders and fifos), ...: left in
            # place, said once, tried again every rescan.
            self._pending_entries[entry.path] = entry
            self.warnings.warn(log, key, "inbox.reject_deferred", failure, file=name,
                               reason=reason, detail=entry.reason, retry="every rescan")
            return
        self._pending_entries.pop(entry.path, None)
        self.warnings.resolved(log, key, "inbox.reject_resumed", file=name)
        self.on_rejected(str(entry.job_type) if entry.job_type else "none", reason)
        # The reason code, as in the .error.json; the sentence apart.
        log.error("input.rejected", file=name, reason=reason, stage="inbox",
                  error_msg=entry.reason,
                  job_type=str(entry.job_type) if entry.job_type else None,
                  rejected_as=placed.name)

    async def retry_pending(self) -> None:
        """Rejections and inbox entries that local trouble left unmoved: try them again."""
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
