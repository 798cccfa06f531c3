"""Write a finished batch's results to the outbox: `<stem>.jsonl` + `<stem>.manifest.json`.

Idempotent by construction: the output name was fixed when the input was claimed, the
content is derived from files kept in the spool until the database says `done`, and every
write is temp + fsync + rename. A crash half-way simply redoes the delivery.

A packed batch (several inputs) has its results split back per input; a split input (one
part per batch) keeps each part's results in the spool and is written to the outbox once,
after its last part.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import structlog

from orchestrator import __version__
from orchestrator.clock import iso, rfc3339, rfc3339_ms
from orchestrator.core.model import Batch, InputFile, InputState
from orchestrator.daemon.compliant import compliant_copy_of
from orchestrator.daemon.datasets import after_delivery, dataset_delta
from orchestrator.files.atomic import (
    Progress,
    atomic_output,
    atomic_write_file,
    atomic_write_json,
    file_sha256,
)
from orchestrator.files.batchfiles import ResultCounts, Slice, count_results, split_results
from orchestrator.files.inbox import changed_since
from orchestrator.layout import Layout
from orchestrator.store.scratch import ResultIndex
from orchestrator.store.sqlite import BatchPart, Store

log = structlog.get_logger(__name__)


def _no_progress() -> None:
    return None


def _split(
    results: Path, members: list[tuple[Slice, Path]], workdir: Path, progress: Progress
) -> None:
    with ResultIndex(workdir / f"{results.name}.split.db") as index:
        split_results(results, members, index, progress)


def _concatenate(sources: list[Path], dest: Path, progress: Progress) -> None:
    with atomic_output(dest) as out:
        for source in sources:
            with open(source, "rb") as stream:
                while block := stream.read(1 << 20):
                    out.write(block)
                    progress()


def _known_report(layout: Layout, batch: Batch) -> tuple[ResultCounts, str] | None:
    """The counts and sha256 that normalising the download already computed, if kept."""
    try:
        data = json.loads(layout.batch_files(batch.id).report.read_text())
        return ResultCounts(int(data["affected"]), dict(data["by_reason"])), str(
            data["output_sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _written_by(manifest_path: Path, batch: Batch) -> bool:
    try:
        written = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(written, dict) and (written.get("batch") or {}).get("key") == batch.key


@dataclass(frozen=True, slots=True)
class _Ready:
    part: BatchPart
    results: Path


async def deliver_batch(
    store: Store, layout: Layout, batch: Batch, *, progress: Progress = _no_progress,
    compliant_copy: bool = False,
) -> list[dict[str, Any]]:
    """Place every part's results; write the outbox for inputs whose last part this is.

    `progress()` is called from worker threads while they split, copy, count and hash (the
    lane's heartbeat: minutes of work for a 100M-ID batch must not look like a hang)."""
    every_part = await store.batch_parts(batch.id)
    # Inputs already delivered before a crash are never written again (a consumer may have
    # taken their files away since); one rejected meanwhile (changed after its claim) has
    # left the spool, body and all: the split reads the bodies of the others only.
    parts = [p for p in every_part if not p.input.state.is_final]
    results = layout.batch_files(batch.id).results
    ready: list[_Ready] = []
    if not parts:
        return []
    if len(every_part) == 1:
        ready.append(_Ready(parts[0], results))  # one input (or part): all results are its own
    else:
        members = [
            (Slice(layout.spool / p.input.ids_name, p.first_id, p.id_count),
             layout.input_files(p.input.spool_name).part_results(p.part))
            for p in parts
        ]
        await anyio.to_thread.run_sync(_split, results, members, layout.spool, progress)
        ready = [_Ready(p, dest) for p, (_, dest) in zip(parts, members, strict=True)]
    summaries = []
    for entry in ready:
        item = entry.part.input
        covered = await store.covered_ids(item.id) + entry.part.id_count
        if covered < (item.id_count or 0):
            keep = layout.input_files(item.spool_name).part_results(entry.part.part)
            if entry.results != keep:  # the batch's files go when it is done; this part stays
                await anyio.to_thread.run_sync(atomic_write_file, keep, entry.results)
            summaries.append({"file": item.name, "input_id": item.id, "part": entry.part.part,
                              "part_ids": entry.part.id_count, "pending": True})
            continue
        manifest_path = layout.manifest_path(item.job_type, item.out_stem)
        if _written_by(manifest_path, batch):
            # Placed just before a crash that beat the database commit: the manifest is the
            # commit point, so it is delivered, whatever happened to the spool file since.
            summaries.append({"file": item.name, "input_id": item.id,
                              "results": f"{item.out_stem}.jsonl", "already_delivered": True})
        else:
            if await _changed_after_claim(store, layout, item):
                continue  # rejected: intake moves the whole file to outbox/rejected/
            summary = await _deliver_input(store, layout, batch, entry, len(every_part),
                                           progress, compliant_copy)
            if summary is None:
                continue  # changed while it was delivered: rejected the same way
            summaries.append(summary)
        await store.mark_delivered(item.id, batch.id)
    return summaries


async def _changed_after_claim(store: Store, layout: Layout, item: InputFile) -> bool:
    """A producer kept writing into the claimed file after it was validated: these results
    cover only part of it. Never deliver them; reject the input (the whole file goes to
    outbox/rejected/ with the reason, to be requeued)."""
    change = await _change(layout, item)
    if change is None:
        return False
    await _reject_changed(store, item, change)
    return True


async def _change(layout: Layout, item: InputFile) -> str | None:
    spooled = layout.spool / item.spool_name
    return await anyio.to_thread.run_sync(
        changed_since, spooled, item.size_bytes, item.mtime_ns, item.ctime_ns,
        item.input_sha256)


async def _reject_changed(store: Store, item: InputFile, change: str) -> None:
    message = (f"{item.name} changed after it was claimed ({change}); its results were not "
               "delivered. Write it as NAME.part and rename it when complete, then requeue it")
    await store.move_input(
        item.id, [InputState.BATCHED], InputState.REJECTED, event="input.rejected",
        detail={"reason": "changed_after_claim"},
        error_json={"file": item.name, "job_type": str(item.job_type), "input_id": item.id,
                    "claimed_at": iso(item.claimed_at), "stage": "delivery",
                    "reason": "changed_after_claim", "message": message,
                    "bytes_validated": item.size_bytes},
    )
    log.error("input.changed_after_claim", file=item.name, input_id=item.id,
              job_type=str(item.job_type), reason="changed_after_claim", change=change,
              bytes_validated=item.size_bytes, action="rejected; results not delivered")


async def _deliver_input(
    store: Store, layout: Layout, batch: Batch, entry: _Ready, inputs_in_batch: int,
    progress: Progress, compliant_copy: bool = False,
) -> dict[str, Any] | None:
    """Write the input's results and then its manifest; None if the input changed meanwhile
    (rejected, nothing left in the outbox)."""
    item = entry.part.input
    manifest_path = layout.manifest_path(item.job_type, item.out_stem)
    earlier = [
        row for row in await store.parts_of_input(item.id) if row["part"] != entry.part.part
    ]
    own = layout.input_files(item.spool_name)
    sources = [own.part_results(row["part"]) for row in earlier] + [entry.results]
    target = layout.results_path(item.job_type, item.out_stem)
    target.parent.mkdir(parents=True, exist_ok=True)
    whole_batch = sources == [layout.batch_files(batch.id).results]
    known = _known_report(layout, batch) if whole_batch else None
    if len(sources) == 1:
        # A hard link where spool and outbox share a filesystem: no copy of a large file.
        await anyio.to_thread.run_sync(
            functools.partial(atomic_write_file, target, sources[0], allow_link=True)
        )
    else:
        await anyio.to_thread.run_sync(_concatenate, sources, target, progress)
    if known is not None:  # computed while the download was normalised: same bytes
        counts, output_sha256 = known
    else:
        counts = await anyio.to_thread.run_sync(count_results, target, progress)
        output_sha256 = await anyio.to_thread.run_sync(file_sha256, target, progress)
    jobs = [dict(row) for row in await store.remote_jobs_of_input(item.id)]
    now = store.clock.now()
    claimed = item.claimed_at
    manifest = {
        "generator": f"compliance-orchestrator {__version__}",
        "input": {
            "file": item.name, "job_type": str(item.job_type), "bytes": item.size_bytes,
            "sha256": item.input_sha256, "claimed_at": rfc3339_ms(claimed),
            "dropped_lines": item.bad_line_count,
            **({"bad_lines": item.report.get("bad_lines", [])}
               if item.report and item.bad_line_count else {}),
        },
        "output": {"file": target.name, "bytes": target.stat().st_size, "sha256": output_sha256},
        "counts": {
            "submitted": item.id_count, "affected": counts.affected,
            "by_reason": dict(sorted(counts.by_reason.items())),
        },
        "batch": {"id": batch.id, "key": batch.key, "attempts": batch.attempt,
                  "inputs": inputs_in_batch, "ids": batch.id_count,
                  "parts": len(sources)},
        "jobs": [
            {"x_job_id": job["x_job_id"], "attempt": job["attempt"], "name": job["name"],
             "created_at": rfc3339(job["created_at"]), "status": job["final_status"],
             "shared_by_inputs": job["batch_inputs"],
             **({"error": job["error"]} if job["error"] else {})}
            for job in jobs
        ],
        # RFC 3339 UTC, milliseconds; job_created_at is X's, in X's whole seconds (so it may
        # read up to a second before queued_at).
        "timings": {
            "claimed_at": rfc3339_ms(claimed), "queued_at": rfc3339_ms(item.queued_at),
            "job_created_at": rfc3339(batch.x_created_at),
            "uploaded_at": rfc3339_ms(batch.uploaded_at),
            "completed_at": rfc3339_ms(batch.completed_at), "delivered_at": rfc3339_ms(now),
            "total_s": round((now - claimed).total_seconds(), 3) if claimed else None,
        },
    }
    # Writing and hashing the results can take minutes: a producer writing without `.part`
    # meanwhile would lose those bytes when cleanup removes the spool file. Look again
    # right before the commit point.
    change = await _change(layout, item)
    if change is not None:
        target.unlink(missing_ok=True)  # first: a crash must not leave results without a record
        await _reject_changed(store, item, change)
        return None
    delta = await dataset_delta(layout, item, target, now, progress)
    if delta is not None:
        manifest["delta"] = delta
    if compliant_copy:
        copied = await compliant_copy_of(layout, item, target, progress)
        if copied is not None:
            manifest["compliant_copy"] = copied
    # The manifest goes last: its presence (naming this batch) marks the input delivered.
    await anyio.to_thread.run_sync(atomic_write_json, manifest_path, manifest)
    await after_delivery(layout, item)
    return {"file": item.name, "input_id": item.id, "results": target.name,
            "affected": counts.affected, "submitted": item.id_count}


async def cleanup_after(store: Store, layout: Layout, batch: Batch) -> None:
    """Remove spool files nobody needs any more once a batch is final."""
    for path in layout.batch_files(batch.id).all:
        path.unlink(missing_ok=True)
    parts = await store.batch_parts(batch.id)
    if batch.upload_name and all(batch.upload_name != p.input.ids_name for p in parts):
        (layout.spool / batch.upload_name).unlink(missing_ok=True)  # pack or part body
    for part in parts:
        current = await store.get_input(part.input.id)
        if current is None or current.state not in (InputState.DELIVERED, InputState.REJECTED):
            continue  # more parts to come
        if current.state is InputState.DELIVERED:  # a rejected one's file is intake's to move
            for name in (current.spool_name, current.ids_name):
                (layout.spool / name).unlink(missing_ok=True)
        for other in layout.input_files(current.spool_name).parts():
            other.unlink(missing_ok=True)  # results and bodies of every part
