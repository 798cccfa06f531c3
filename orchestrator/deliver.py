"""Write a finished batch's results to the outbox: `<stem>.jsonl` + `<stem>.manifest.json`.

Idempotent by construction: the output name was fixed when the input was claimed, the
content is derived from files kept in the spool until the database says `done`, and every
write is temp + fsync + rename. A crash half-way simply redoes the delivery.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import anyio

from orchestrator import __version__
from orchestrator.clock import iso
from orchestrator.layout import Layout
from orchestrator.model import Batch
from orchestrator.outbox import atomic_write_file, atomic_write_json
from orchestrator.results import ResultReport
from orchestrator.store import BatchPart, Store


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def batch_files(layout: Layout, batch: Batch) -> dict[str, Path]:
    """Work files of a batch in the spool."""
    return {
        "raw": layout.spool / f"batch-{batch.id}.download",
        "results": layout.spool / f"batch-{batch.id}.results.jsonl",
        "report": layout.spool / f"batch-{batch.id}.results.json",
    }


async def deliver_batch(
    store: Store, layout: Layout, batch: Batch, report: ResultReport
) -> list[dict[str, Any]]:
    """Write every input's results and manifest; returns one summary per input."""
    parts = await store.batch_parts(batch.id)
    if len(parts) != 1 or parts[0].first_id != 0 or parts[0].id_count != parts[0].input.id_count:
        # Packing and splitting write per-input results from a membership index; batches are
        # formed one whole input each until that lands, so this is a programming error.
        raise RuntimeError(f"batch {batch.id} does not carry exactly one whole input")
    results = batch_files(layout, batch)["results"]
    remote_jobs = [dict(row) for row in await store.remote_jobs_of(batch.id)]
    summaries = []
    for part in parts:
        summaries.append(
            await _deliver_input(store, layout, batch, part, results, report, remote_jobs)
        )
    return summaries


async def _deliver_input(
    store: Store,
    layout: Layout,
    batch: Batch,
    part: BatchPart,
    results: Path,
    report: ResultReport,
    remote_jobs: list[dict[str, Any]],
) -> dict[str, Any]:
    item = part.input
    out_dir = layout.outbox_for(item.job_type)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = layout.results_path(item.job_type, item.out_stem)
    await anyio.to_thread.run_sync(atomic_write_file, target, results)
    output_sha256 = await anyio.to_thread.run_sync(_sha256_of, target)
    now = store.clock.now()
    claimed = item.claimed_at
    manifest = {
        "generator": f"compliance-orchestrator {__version__}",
        "input": {
            "file": item.name,
            "job_type": str(item.job_type),
            "bytes": item.size_bytes,
            "sha256": item.input_sha256,
            "claimed_at": iso(claimed),
            "dropped_lines": item.bad_line_count,
            **(
                {"bad_lines": item.report.get("bad_lines", [])}
                if item.report and item.bad_line_count
                else {}
            ),
        },
        "output": {
            "file": target.name,
            "bytes": target.stat().st_size,
            "sha256": output_sha256,
        },
        "counts": {
            "submitted": item.id_count,
            "affected": report.affected,
            "by_reason": dict(sorted(report.by_reason.items())),
        },
        "batch": {
            "id": batch.id,
            "key": batch.key,
            "attempts": batch.attempt,
            "inputs": 1,
            "ids": batch.id_count,
        },
        "jobs": [
            {
                "x_job_id": job["x_job_id"],
                "attempt": job["attempt"],
                "name": job["name"],
                "created_at": job["created_at"],
                "status": job["final_status"],
                **({"error": job["error"]} if job["error"] else {}),
            }
            for job in remote_jobs
        ],
        "timings": {
            "claimed_at": iso(claimed),
            "queued_at": iso(item.queued_at),
            "job_created_at": iso(batch.x_created_at),
            "uploaded_at": iso(batch.uploaded_at),
            "completed_at": iso(batch.completed_at),
            "delivered_at": iso(now),
            "total_s": round((now - claimed).total_seconds(), 3) if claimed else None,
        },
    }
    manifest_path = layout.manifest_path(item.job_type, item.out_stem)
    await anyio.to_thread.run_sync(atomic_write_json, manifest_path, manifest)
    return {
        "file": item.name,
        "input_id": item.id,
        "results": target.name,
        "affected": report.affected,
        "submitted": item.id_count,
    }
