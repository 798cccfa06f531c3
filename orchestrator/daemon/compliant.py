"""`[outputs] compliant_copy`: beside a JSON Lines input's results, `<stem>.compliant.jsonl`,
the input as the user may keep it (files/compliant.py), written from the claimed original
in the spool before the manifest, so a redone delivery writes it again the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import structlog

from orchestrator.core.model import InputFile
from orchestrator.files.atomic import Progress, file_sha256
from orchestrator.files.compliant import write_compliant_copy
from orchestrator.files.records import sniff_file
from orchestrator.layout import Layout
from orchestrator.store.scratch import ReasonIndex

log = structlog.get_logger(__name__)


def compliant_path(layout: Layout, item: InputFile) -> Path:
    return layout.outbox_for(item.job_type) / f"{item.out_stem}.compliant.jsonl"


def _write(layout: Layout, item: InputFile, results: Path, progress: Progress) -> dict[str, Any]:
    original = layout.spool / item.spool_name
    dest = compliant_path(layout, item)
    with ReasonIndex(layout.spool / f".{item.spool_name}.reasons.db") as index:
        counts = write_compliant_copy(original, results, dest, index, progress)
    return {"file": dest.name, "bytes": dest.stat().st_size,
            "sha256": file_sha256(dest, progress), **counts.as_dict()}


async def compliant_copy_of(layout: Layout, item: InputFile, results: Path,
                            progress: Progress) -> dict[str, Any] | None:
    """The manifest's `compliant_copy` section after writing the copy; None when the input is
    not JSON Lines (an ID list or a CSV export has no objects to keep)."""
    original = layout.spool / item.spool_name
    fmt = await anyio.to_thread.run_sync(sniff_file, original, item.name)
    if fmt != "jsonl":
        return None
    section = await anyio.to_thread.run_sync(_write, layout, item, results, progress)
    log.info("outbox.compliant_copy", file=item.name, input_id=item.id,
             removed=section["removed"], scrubbed=section["scrubbed"])
    return section
