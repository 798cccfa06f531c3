"""`jobs`: the history of batches (one remote job's worth of work each), newest first.

Read-only, like `status` (the store's reports: SQLite `mode=ro`, or a PostgreSQL READ ONLY
transaction), so it works while the daemons run and never creates or changes the database.
Signed URLs are never selected, and error texts pass through redaction, so nothing secret
can be printed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from orchestrator.cli.common import (
    Outcome,
    layout_from_args,
    run_admin,
    short_time,
)
from orchestrator.cli.status import daemon_pid, no_state_note
from orchestrator.clock import SystemClock, rfc3339
from orchestrator.core.model import BatchState, JobType
from orchestrator.daemon.lock import lock_file_name
from orchestrator.files.inbox import printable
from orchestrator.layout import Layout
from orchestrator.redact import redact_text
from orchestrator.store import reports


def duration_text(seconds: float | None) -> str:
    """Compact and readable: `850ms`, `42s`, `4m05s`, `2h03m`, `3d04h`."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _affected_from_manifests(layout: Layout, batch_id: int, job_type: str,
                             files: list[dict[str, str]]) -> int | None:
    """For batches whose download event is missing: sum the delivered manifests' counts."""
    total, found = 0, False
    for item in files:
        path = layout.manifest_path(JobType(job_type), item["out_stem"])
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if manifest.get("batch", {}).get("id") == batch_id:
            total += int(manifest.get("counts", {}).get("affected") or 0)
            found = True
    return total if found else None


def _reason(row: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(code, sentence): the codes are those of `.error.json` (cancelled, gave_up) and
    `retrying` for a batch still backing off after an error."""
    state = row["state"]
    if state == "cancelled":
        detail = json.loads(row["cancel_detail"] or "{}")
        forced = " (--force: remote job abandoned)" if detail.get("forced") else ""
        return "cancelled", f"cancelled by operator{forced}"
    if state == "done" or not row["last_error"]:
        return None, None
    if state == "failed":
        return "gave_up", f"gave up: {redact_text(row['last_error'])}"
    return "retrying", f"last error: {redact_text(row['last_error'])}"


def collect(layout: Layout, limit: int, now: datetime) -> dict[str, Any]:
    """The report of `jobs`, from the configured store (either backend), read-only."""
    report: dict[str, Any] = {
        "daemon_pid": daemon_pid(layout.state_dir, lock_file_name(layout.host_id)),
        "state_db": reports.store_location(layout), "limit": limit, "jobs": [],
    }
    with reports.open_reports(layout) as reader:
        if reader is None:
            report["note"] = no_state_note(layout)
            return report
        rows = reports.batch_history(reader, limit)
        report["total"] = reports.batch_total(reader)
        remote = reports.remote_jobs_by_batch(reader, [r["id"] for r in rows])
        hooks = reports.hook_runs_report(reader, 0, [r["id"] for r in rows] or [0]).get(
            "by_batch", {})
    for row in rows:
        files = row["files"]
        started = datetime.fromisoformat(row["created_at"])
        finished = datetime.fromisoformat(row["finished_at"]) if row["finished_at"] else None
        affected = row["affected"]
        reason, message = _reason(row)
        if affected is None and row["state"] == "done":
            affected = _affected_from_manifests(layout, row["id"], row["job_type"], files)
        jobs = remote.get(row["id"], [])
        # The batch's current job has no final status in remote_jobs yet: show the last seen.
        for job in jobs:
            if job["status"] is None and job["x_job_id"] == row["x_job_id"]:
                job["status"] = row["x_status"]
            job["created_at"] = rfc3339(job["created_at"]) if job["created_at"] else None
        report["jobs"].append({
            "batch_id": row["id"],
            "key": row["key"],
            "job_type": row["job_type"],
            "outcome": row["state"] if BatchState(row["state"]).is_final else "in progress",
            "state": row["state"],
            "started_at": rfc3339(row["created_at"]),
            "finished_at": rfc3339(row["finished_at"]),
            "duration_s": round(((finished or now) - started).total_seconds(), 3),
            "inputs": len(files),
            "files": [f["name"] for f in files],
            "ids": row["id_count"],
            "affected": affected,
            "attempts": row["attempt"],
            "remote_jobs": jobs,
            "next_attempt_at": rfc3339(row["next_attempt_at"]) if not finished else None,
            "last_http_status": row["last_http_status"],
            "reason": reason,
            "message": message,
            "hook_runs": hooks.get(row["id"], {}),  # {state: runs} of its inputs' hooks
        })
    return report


_COLUMNS = ("BATCH", "TYPE", "OUTCOME", "STARTED (UTC)", "DURATION", "INPUTS", "IDS",
            "AFFECTED", "ATTEMPTS", "REMOTE JOBS", "FILES")
_RIGHT = {"BATCH", "INPUTS", "IDS", "AFFECTED", "ATTEMPTS"}


def _cells(job: dict[str, Any]) -> list[str]:
    outcome = job["outcome"] if job["outcome"] != "in progress" else f"in progress ({job['state']})"
    remote = ", ".join(
        f"{r['x_job_id']} ({r['status'] or '?'})" for r in job["remote_jobs"]
    ) or "-"
    return [
        str(job["batch_id"]), job["job_type"], outcome, short_time(job["started_at"]),
        duration_text(job["duration_s"]), str(job["inputs"]), str(job["ids"]),
        "-" if job["affected"] is None else str(job["affected"]), str(job["attempts"]),
        remote, printable(", ".join(job["files"])) or "-",
    ]


def render(report: dict[str, Any]) -> str:
    pid = report["daemon_pid"]
    lines = [f"daemon: {'running (pid ' + str(pid) + ')' if pid else 'not running'}"]
    if report.get("note"):
        return "\n".join([*lines, report["note"]])
    if not report["jobs"]:
        return "\n".join([*lines, "no jobs yet"])
    table = [list(_COLUMNS), *(_cells(job) for job in report["jobs"])]
    widths = [max(len(row[i]) for row in table) for i in range(len(_COLUMNS))]

    def line(cells: list[str]) -> str:
        parts = [
            cell.rjust(width) if name in _RIGHT else cell.ljust(width)
            for name, cell, width in zip(_COLUMNS, cells, widths, strict=True)
        ]
        return "  ".join(parts).rstrip()

    lines.append(line(table[0]))
    for job, cells in zip(report["jobs"], table[1:], strict=True):
        lines.append(line(cells))
        note = job["message"]
        if note and job["next_attempt_at"]:  # backing off; a plain poll interval is no news
            note += f"; next try not before {short_time(job['next_attempt_at'])}"
        if note:
            lines.append(f"{'':>{widths[0]}}  -> {printable(note)}")
        if job.get("hook_runs"):
            counts = ", ".join(f"{n} {state}" for state, n in sorted(job["hook_runs"].items()))
            lines.append(f"{'':>{widths[0]}}  -> hook runs: {counts}")
    shown, total = len(report["jobs"]), report.get("total", len(report["jobs"]))
    if total > shown:
        lines.append(f"({shown} of {total} shown; use --limit for more)")
    return "\n".join(lines)


def _jobs(args: argparse.Namespace) -> Outcome:
    layout = layout_from_args(args)
    report = collect(layout, args.limit, SystemClock().now())
    return report, render(report)


def jobs_command(args: argparse.Namespace) -> int:
    return run_admin(args, _jobs)

