"""`status`: queue, current jobs, deadlines, recent outcomes, read from the state database.

Reads the database through the store's read-only reports (`mode=ro`), so it works while the
daemon runs and never takes the daemon's lock. Signed URLs are never selected, so they
cannot be printed.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sqlite3
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator.clock import SystemClock
from orchestrator.config import load_config
from orchestrator.errors import ConfigError
from orchestrator.files.inbox import printable
from orchestrator.layout import Layout
from orchestrator.store import reports
from orchestrator.store.reports import open_readonly

_RECENT_FAILURE_KINDS = (
    "step.retry",
    "job.failed",
    "job.expired",
    "job.abandoned",
    "batch.gave_up",
    "input.rejected",
    "xapi.auth_failed",
    "outbox.write_failed",
)


def daemon_pid(state_dir: Path) -> int | None:
    """PID of the running daemon, judged by whether its lock is held."""
    lock_path = state_dir / "daemon.lock"
    try:
        # Read-only is enough for flock, and works for group members who may not write it.
        with open(lock_path, "rb") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = handle.read().decode(errors="replace").strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    except (FileNotFoundError, PermissionError):
        return None
    return None


def collect(layout: Layout, now: datetime) -> dict[str, Any]:
    report: dict[str, Any] = {
        "daemon_pid": daemon_pid(layout.state_dir),
        "state_db": str(layout.db_path),
    }
    if not layout.db_path.exists():
        report.update(queue={}, current=[], recent=[], failures=[], note="no state database yet")
        return report
    with open_readonly(layout.db_path) as conn:
        queue = reports.input_counts(conn)
        current = reports.open_batches(conn)
        recent = reports.recent_outcomes(conn, 10)
        failures = reports.recent_events(conn, _RECENT_FAILURE_KINDS, 10)
    for entry in current:
        for key in ("upload_expires_at", "download_expires_at"):
            if entry[key]:
                left = datetime.fromisoformat(entry[key]) - now
                entry[key.replace("_at", "_in_s")] = round(left.total_seconds())
    report.update(queue=queue, current=current, recent=recent, failures=failures)
    return report


def render(report: dict[str, Any]) -> str:
    lines = []
    pid = report["daemon_pid"]
    lines.append(f"daemon: {'running (pid ' + str(pid) + ')' if pid else 'not running'}")
    if report.get("note"):
        lines.append(report["note"])
        return "\n".join(lines)
    lines.append("queue:")
    if not report["queue"]:
        lines.append("  (no inputs yet)")
    for job_type, states in sorted(report["queue"].items()):
        waiting = sum(states.get(s, 0) for s in ("claiming", "claimed", "queued"))
        lines.append(
            f"  {job_type:7} waiting {waiting:4}  in a job {states.get('batched', 0):3}"
            f"  delivered {states.get('delivered', 0):5}"
            f"  rejected {states.get('rejected', 0):4}"
        )
    lines.append("current jobs:")
    if not report["current"]:
        lines.append("  none")
    for job in report["current"]:
        lines.append(
            f"  batch {job['id']} {job['job_type']} [{printable(job['files'])}]"
            f" {job['id_count']} IDs:"
            f" {job['state']}, attempt {job['attempt']}, remote {job['x_job_id'] or '-'}"
            f" ({job['x_status'] or '-'}), polls {job['poll_count']}"
        )
        if "upload_expires_in_s" in job and job["state"] in ("creating", "uploading"):
            lines.append(f"    upload window closes in {job['upload_expires_in_s']} s")
        if "download_expires_in_s" in job:
            lines.append(f"    results must be downloaded within {job['download_expires_in_s']} s")
        if job["next_attempt_at"]:
            lines.append(f"    next step not before {job['next_attempt_at']}")
        if job["last_error"]:
            lines.append(f"    last error: {printable(job['last_error'])}")
    lines.append("recent outcomes:")
    if not report["recent"]:
        lines.append("  none")
    for item in report["recent"]:
        detail = (
            f"-> {printable(item['out_stem'])}.jsonl"
            if item["outcome"] == "delivered"
            else f"({printable(item['reason'])})"
        )
        lines.append(
            f"  {item['finished_at']}  {item['job_type']:6} {printable(item['file'])}:"
            f" {item['outcome']} {detail}"
        )
    if report["failures"]:
        lines.append("recent problems:")
        for failure in report["failures"]:
            brief = {k: v for k, v in failure["detail"].items() if v is not None}
            lines.append(
                f"  {failure['at']}  {failure['kind']}  batch {failure['batch_id']}"
                f"  {json.dumps(brief, sort_keys=True)}"
            )
    return "\n".join(lines)


def status_command(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"compliance-orchestrator: {error}", file=sys.stderr)
        return 2
    layout = Layout.from_config(config)
    try:
        report = collect(layout, SystemClock().now())
    except sqlite3.Error as error:
        print(f"compliance-orchestrator: cannot read {layout.db_path}: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True, default=str))
    else:
        print(render(report))
    return 0
