"""Burst mode's question: is the queue drained? (`Service.until_idle`, `run(until_idle=True)`)

Drained means: the inbox holds nothing the scan would still claim or reject, every input and
every batch is final, and the spool is empty. Asked in this order, the answer cannot be a
false "yes" while a file moves along: a file leaves the inbox only after its row exists, and
its spool files go only after that row is final.
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio

from orchestrator.core.model import InputState, JobType
from orchestrator.files.inbox import is_ignored_name
from orchestrator.layout import Layout
from orchestrator.store.sqlite import Store

OPEN_INPUTS = tuple(state for state in InputState if not state.is_final)


async def drained(store: Store, layout: Layout) -> bool:
    if await anyio.to_thread.run_sync(inbox_holds_work, layout.inbox):
        return False
    if await store.count_inputs_by_type(OPEN_INPUTS):
        return False
    if await store.active_batches(JobType):
        return False
    return not await anyio.to_thread.run_sync(spool_holds_files, layout.spool)


def _listing(folder: Path, *, skip_ignored: bool) -> list[os.DirEntry[str]] | None:
    """The entries of `folder` ([] if it is missing), None if it cannot be read."""
    try:
        with os.scandir(folder) as entries:
            return [e for e in entries if not (skip_ignored and is_ignored_name(e.name))]
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError:
        return None


def inbox_holds_work(inbox: Path) -> bool:
    """Anything the inbox scan would still claim or reject (work in progress aside). A folder
    that cannot be read may hold work: the scan says so in its own log line."""
    type_folders = {str(job_type) for job_type in JobType}
    listing = _listing(inbox, skip_ignored=True)
    if listing is None:
        return True
    for entry in listing:
        if entry.name not in type_folders or not entry.is_dir():  # a type folder may be a link
            return True
        if _listing(Path(entry.path), skip_ignored=True) != []:
            return True
    return False


def spool_holds_files(spool: Path) -> bool:
    return _listing(spool, skip_ignored=False) != []
