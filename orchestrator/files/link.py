"""`inbox.duplicate_content = "link"`: what to copy from an earlier delivered twin, and the
manifest of the linked copy. Pure file reading and dict building; intake.py does the rest.
"""

from __future__ import annotations

import json
import os
import stat
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator import __version__
from orchestrator.clock import rfc3339_ms
from orchestrator.core.model import InputFile
from orchestrator.layout import Layout

_MAX_MANIFEST_BYTES = 16 * 1024 * 1024  # ours are a few KiB


def link_intent(layout: Layout, twin: InputFile) -> tuple[dict[str, Any] | None, str]:
    """What to copy from a delivered twin, from its manifest; or (None, why not)."""
    manifest_path = layout.manifest_path(twin.job_type, twin.out_stem)
    results = layout.results_path(twin.job_type, twin.out_stem)
    try:
        if os.lstat(manifest_path).st_size > _MAX_MANIFEST_BYTES:
            return None, f"{manifest_path.name} is not a manifest of ours"
        manifest = json.loads(manifest_path.read_bytes())
        output, counts = manifest["output"], manifest["counts"]
        sha, size = str(output["sha256"]), int(output["bytes"])
        affected, by_reason = int(counts["affected"]), dict(counts["by_reason"])
    except FileNotFoundError:
        return None, f"{manifest_path.name} was removed from the outbox"
    except (OSError, ValueError, KeyError, TypeError):
        return None, f"{manifest_path.name} is unreadable"
    try:
        st = os.lstat(results)
    except FileNotFoundError:
        return None, f"{results.name} was removed from the outbox"
    if not stat.S_ISREG(st.st_mode) or st.st_size != size:
        return None, f"{results.name} was changed (it no longer matches its manifest)"
    linked = manifest.get("linked_to")
    jobs = manifest.get("jobs") or (linked or {}).get("jobs") or []
    return {
        "input_id": twin.id,
        "file": twin.name,
        "results": results.name,
        "output_sha256": sha,
        "output_bytes": size,
        "affected": affected,
        "by_reason": by_reason,
        "delivered_at": (manifest.get("timings") or {}).get("delivered_at")
        or rfc3339_ms(twin.finished_at),
        "jobs": jobs,
    }, ""


def linked_manifest(item: InputFile, intent: dict[str, Any], dest: Path,
                    now: datetime) -> dict[str, Any]:
    claimed = item.claimed_at
    return {
        "generator": f"compliance-orchestrator {__version__}",
        "input": {
            "file": item.name,
            "job_type": str(item.job_type),
            "bytes": item.size_bytes,
            "sha256": item.input_sha256,
            "claimed_at": rfc3339_ms(claimed),
            "dropped_lines": item.bad_line_count,
            **({"bad_lines": (item.report or {}).get("bad_lines", [])}
               if item.bad_line_count else {}),
        },
        "output": {"file": dest.name, "bytes": intent["output_bytes"],
                   "sha256": intent["output_sha256"]},
        "counts": {"submitted": item.id_count, "affected": intent["affected"],
                   "by_reason": dict(sorted(intent["by_reason"].items()))},
        "linked_to": {key: intent[key] for key in
                      ("file", "input_id", "results", "delivered_at", "jobs")},
        "batch": None,
        "jobs": [],
        "timings": {
            "claimed_at": rfc3339_ms(claimed),
            "queued_at": None,
            "delivered_at": rfc3339_ms(now),
            "total_s": round((now - claimed).total_seconds(), 3) if claimed else None,
        },
    }
