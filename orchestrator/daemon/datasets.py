"""Deliveries of a named dataset (`NAME@STAMP.ext`, core/datasets.py) are compared with the
one before: `<stem>.delta.jsonl` in the outbox beside the results, and a `delta` section in
the manifest saying which delivery it was compared with. A dataset's first delivery has no
delta (`first_delivery: true`, no file): it becomes the baseline of the next.

Each delivery leaves a baseline in `<state_dir>/datasets/<type>/<NAME>/`: its result rows
sorted by ID (`<input id>.sorted`) and what the manifest needs to name it (`<input id>.json`).
A delivery compares itself with the newest baseline of a *lower* input id, so redoing a
delivery after a crash (the manifest is the commit point) finds the same one and writes the
same delta. Baselines older than the one just compared with are removed once the manifest is
written; the newest two are kept.
"""

from __future__ import annotations

import contextlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import structlog

from orchestrator.clock import rfc3339_ms
from orchestrator.core.datasets import dataset_of
from orchestrator.core.model import InputFile
from orchestrator.files.atomic import Progress, atomic_write_json
from orchestrator.files.delta import sort_ids, sort_rows, write_delta
from orchestrator.layout import Layout

log = structlog.get_logger(__name__)


def baseline_dir(layout: Layout, item: InputFile, dataset: str) -> Path:
    return layout.state_dir / "datasets" / str(item.job_type) / dataset


def delta_path(layout: Layout, item: InputFile) -> Path:
    return layout.outbox_for(item.job_type) / f"{item.out_stem}.delta.jsonl"


def _baselines(folder: Path) -> list[int]:
    """Input ids with a complete baseline (both files), ascending."""
    found = []
    for meta in folder.glob("*.json"):
        if meta.stem.isdigit() and (folder / f"{meta.stem}.sorted").exists():
            found.append(int(meta.stem))
    return sorted(found)


def _compute(layout: Layout, item: InputFile, dataset: str, results: Path, now: datetime,
             progress: Progress) -> dict[str, Any]:
    folder = baseline_dir(layout, item, dataset)
    folder.mkdir(parents=True, exist_ok=True)
    earlier = [n for n in _baselines(folder) if n < item.id]
    previous = earlier[-1] if earlier else None
    own = folder / f"{item.id}.sorted"
    sort_rows(results, own, folder, progress=progress)
    counts = None
    if previous is not None:  # a first delivery is only the baseline: it has no delta
        keys = folder / f".{item.id}.keys"
        try:
            sort_ids(layout.spool / item.ids_name, keys, folder, progress=progress)
            counts = write_delta(folder / f"{previous}.sorted", own, keys,
                                 delta_path(layout, item), progress)
        finally:
            keys.unlink(missing_ok=True)
    atomic_write_json(folder / f"{item.id}.json",
                      {"input_id": item.id, "file": item.name, "out_stem": item.out_stem,
                       "delivered_at": rfc3339_ms(now)})
    compared: dict[str, Any] | None = None
    if previous is not None:
        with contextlib.suppress(OSError, ValueError):
            compared = json.loads((folder / f"{previous}.json").read_text())
    return {
        "dataset": dataset,
        "file": delta_path(layout, item).name if counts is not None else None,
        "first_delivery": previous is None,
        "compared_with": compared,
        "counts": counts.as_dict() if counts is not None else None,
    }


async def dataset_delta(layout: Layout, item: InputFile, results: Path, now: datetime,
                        progress: Progress) -> dict[str, Any] | None:
    """The manifest's `delta` section (after writing the delta file), or None when the input
    belongs to no dataset."""
    dataset = dataset_of(item.name)
    if dataset is None:
        return None
    section = await anyio.to_thread.run_sync(
        _compute, layout, item, dataset, results, now, progress)
    log.info("dataset.delta", file=item.name, input_id=item.id, dataset=dataset,
             first_delivery=section["first_delivery"], **(section["counts"] or {}))
    return section


def _prune(layout: Layout, item: InputFile, dataset: str) -> None:
    folder = baseline_dir(layout, item, dataset)
    known = _baselines(folder)
    for old in known[:-2]:
        if old >= item.id:
            break
        for suffix in (".json", ".sorted"):  # the .json first: an incomplete one is ignored
            (folder / f"{old}{suffix}").unlink(missing_ok=True)


async def after_delivery(layout: Layout, item: InputFile) -> None:
    """Once the manifest is durable: drop baselines no later delivery compares with."""
    dataset = dataset_of(item.name)
    if dataset is not None:
        await anyio.to_thread.run_sync(_prune, layout, item, dataset)
