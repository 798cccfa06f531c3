"""Heal a claim that kill -9 (or a failed rename) interrupted between its three steps.

intake.py claims in order: (1) a `claiming` row with the inode, (2) the rename into the
spool, (3) the row becomes `claimed`. Here a `claiming` row is finished when the spooled file
is whole, or undone when the file never left the inbox (or vanished).
"""

from __future__ import annotations

import contextlib
import os

import anyio
import structlog

from orchestrator.core.model import InputFile, InputState
from orchestrator.files.claim import is_the_copied_file
from orchestrator.layout import Layout
from orchestrator.store.sqlite import Store

log = structlog.get_logger(__name__)


async def recover_claiming(store: Store, layout: Layout, item: InputFile) -> None:
    """Finish or undo a claim a crash (or a failed rename) left in `claiming`."""
    spooled = layout.spool / item.spool_name
    # By its raw bytes: the display name of a non-UTF-8 name (`\\xff`) is another file.
    raw = item.name_bytes if item.name_bytes is not None else os.fsencode(item.name)
    original = layout.inbox_for(item.job_type) / os.fsdecode(raw)
    original_stat = None
    with contextlib.suppress(OSError):
        original_stat = original.lstat()
    spooled_stat = None
    with contextlib.suppress(FileNotFoundError):
        spooled_stat = spooled.stat()
    if spooled_stat is not None:
        # The rename, or the atomic cross-filesystem copy, completed: the spooled file is
        # whole. Never delete it; drop the inbox original only if it is the copied file.
        copied = original_stat is not None and await anyio.to_thread.run_sync(
            is_the_copied_file, item, original, original_stat, spooled, spooled_stat)
        if copied:
            try:
                original.unlink()
            except FileNotFoundError:
                pass  # its producer removed it meanwhile: the copy is now the only one, keep it
            except OSError as error:  # cannot remove it: undo the claim, say so once
                spooled.unlink(missing_ok=True)
                await store.delete_claiming(item.id, "cannot remove it from the inbox")
                log.error("inbox.unclaimable", file=item.name, error_msg=str(error))
                return
        # What the rename took may be a replacement of the file scanned: validation
        # compares with what is in the spool now (and waits while it still changes).
        await store.move_input(item.id, [InputState.CLAIMING], InputState.CLAIMED,
                               event="inbox.claimed", detail={"recovered": True},
                               size_bytes=spooled_stat.st_size,
                               mtime_ns=spooled_stat.st_mtime_ns,
                               ctime_ns=spooled_stat.st_ctime_ns)
        log.info("inbox.claim_recovered", file=item.name, input_id=item.id)
        return
    same_original = original_stat is not None and original_stat.st_ino == item.inode
    reason = ("claim interrupted; the file stays in the inbox" if same_original
              else "file vanished before it was claimed")
    await store.delete_claiming(item.id, reason)
    log.warning("inbox.claim_undone", file=item.name,
                reason="claim_interrupted" if same_original else "vanished", detail=reason)
