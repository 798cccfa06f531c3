"""`jobs`: the history of batches (one remote job's worth of work each), newest first.

Read-only, like `status`: SQLite is opened with `mode=ro`, so it works while the daemon runs
and never creates or changes the database. Signed URLs are never selected, and error texts
pass through redaction, so nothing secret can be printed.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from datetime import UTC, datetime
from typing import Any

from orchestrator.cli.common import (
    Outcome,
    layout_from_args,
    run_admin,
    short_time,
)
from orchestrator.cli.status import daemon_pid
from orchestrator.core.model import JobType
from orchestrator.layout import Layout
from orchestrator.redact import redact_text

DEFAULT_LIMIT = 20
_OUTCOMES = {"done": "done", "failed": "failed", "cancelled": "cancelled"}

_BATCHES_SQL = """
SELECT b.id, b.key, b.job_type, b.state, b.attempt, b.id_count, b.created_at, b.finished_at,
       b.next_attempt_at, b.x_job_id, b.x_status, b.last_error, b.last_http_status,
       (SELECT json_group_array(json_object('name', i.name, 'out_stem', i.out_stem))
          FROM (SELECT DISTINCT i.id, i.name, i.out_stem FROM batch_inputs bi
                JOIN inputs i ON i.id = bi.input_id WHERE bi.batch_id = b.id ORDER BY i.id) i
       ) AS files,
       (SELECT json_extract(e.detail_json, '$.affected') FROM events e
         WHERE e.batch_id = b.id AND e.kind = 'download.completed'
         ORDER BY e.id DESC LIMIT 1) AS affected,
       (SELECT e.detail_json FROM events e
         WHERE e.batch_id = b.id AND e.kind = 'operator.cancel'
         ORDER BY e.id DESC LIMIT 1) AS cancel_detail
  FROM batches b ORDER BY b.id DESC LIMIT ?
"""


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


def _reason(row: sqlite3.Row) -> str | None:
    state = row["state"]
    if state == "cancelled":
        detail = json.loads(row["cancel_detail"] or "{}")
        forced = " (--force: remote job abandoned)" if detail.get("forced") else ""
        return f"cancelled by operator{forced}"
    if state == "done" or not row["last_error"]:
        return None
    if state == "failed":
        return f"gave up: {redact_text(row['last_error'])}"
    return f"last error: {redact_text(row['last_error'])}"


def collect(layout: Layout, limit: int, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    report: dict[str, Any] = {
        "daemon_pid": daemon_pid(layout.state_dir), "state_db": str(layout.db_path),
        "limit": limit, "jobs": [],
    }
    if not layout.db_path.exists():
        report["note"] = "no state database yet"
        return report
    conn = sqlite3.connect(f"file:{layout.db_path}?mode=ro", uri=True, timeout=5)
    conn.row_factory = sqlite3.Row
    try:
        rows = list(conn.execute(_BATCHES_SQL, (limit,)))
        report["total"] = conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
        remote: dict[int, list[dict[str, Any]]] = {}
        if rows:
            marks = ",".join("?" * len(rows))
            for job in conn.execute(
                "SELECT batch_id, x_job_id, attempt, final_status, created_at FROM remote_jobs"  # noqa: S608
                f" WHERE batch_id IN ({marks}) ORDER BY batch_id, attempt",
                [r["id"] for r in rows],
            ):
                remote.setdefault(job["batch_id"], []).append(
                    {"x_job_id": job["x_job_id"], "attempt": job["attempt"],
                     "status": job["final_status"], "created_at": job["created_at"]}
                )
    finally:
        conn.close()
    for row in rows:
        files = json.loads(row["files"] or "[]")
        started = datetime.fromisoformat(row["created_at"])
        finished = datetime.fromisoformat(row["finished_at"]) if row["finished_at"] else None
        affected = row["affected"]
        if affected is None and row["state"] == "done":
            affected = _affected_from_manifests(layout, row["id"], row["job_type"], files)
        jobs = remote.get(row["id"], [])
        # The batch's current job has no final status in remote_jobs yet: show the last seen.
        for job in jobs:
            if job["status"] is None and job["x_job_id"] == row["x_job_id"]:
                job["status"] = row["x_status"]
        report["jobs"].append({
            "batch_id": row["id"],
            "key": row["key"],
            "job_type": row["job_type"],
            "outcome": _OUTCOMES.get(row["state"], "in progress"),
            "state": row["state"],
            "started_at": row["created_at"],
            "finished_at": row["finished_at"],
            "duration_s": round(((finished or now) - started).total_seconds(), 3),
            "inputs": len(files),
            "files": [f["name"] for f in files],
            "ids": row["id_count"],
            "affected": affected,
            "attempts": row["attempt"],
            "remote_jobs": jobs,
            "next_attempt_at": row["next_attempt_at"] if not finished else None,
            "last_http_status": row["last_http_status"],
            "reason": _reason(row),
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
        remote, ", ".join(job["files"]) or "-",
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
        note = job["reason"]
        if note and job["next_attempt_at"]:  # backing off; a plain poll interval is no news
            note += f"; next try not before {short_time(job['next_attempt_at'])}"
        if note:
            lines.append(f"{'':>{widths[0]}}  -> {note}")
    shown, total = len(report["jobs"]), report.get("total", len(report["jobs"]))
    if total > shown:
        lines.append(f"({shown} of {total} shown; use --limit for more)")
    return "\n".join(lines)


def _jobs(args: argparse.Namespace) -> Outcome:
    layout = layout_from_args(args)
    report = collect(layout, args.limit)
    return report, render(report)


def jobs_command(args: argparse.Namespace) -> int:
    return run_admin(args, _jobs)

