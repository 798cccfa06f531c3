"""`status`: queue, current jobs, deadlines, recent outcomes, read from the state database.

Reads SQLite directly in read-only mode, so it works while the daemon runs and never takes
the daemon's lock. Signed URLs are never selected, so they cannot be printed.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.config import load_config
from orchestrator.errors import ConfigError
from orchestrator.layout import Layout

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


def collect(layout: Layout, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    report: dict[str, Any] = {
        "daemon_pid": daemon_pid(layout.state_dir),
        "state_db": str(layout.db_path),
    }
    if not layout.db_path.exists():
        report.update(queue={}, current=[], recent=[], failures=[], note="no state database yet")
        return report
    conn = sqlite3.connect(f"file:{layout.db_path}?mode=ro", uri=True, timeout=5)
    conn.row_factory = sqlite3.Row
    try:
        queue: dict[str, dict[str, int]] = {}
        for row in conn.execute(
            "SELECT job_type, state, COUNT(*) AS n FROM inputs GROUP BY job_type, state"
        ):
            queue.setdefault(row["job_type"], {})[row["state"]] = row["n"]
        current = []
        for row in conn.execute(
            "SELECT id, job_type, state, attempt, x_job_id, x_status, id_count, created_at,"
            " upload_expires_at, download_expires_at, next_attempt_at, poll_count, last_error,"
            " last_http_status, (SELECT GROUP_CONCAT(i.name, ', ') FROM batch_inputs bi"
            " JOIN inputs i ON i.id = bi.input_id WHERE bi.batch_id = batches.id) AS files"
            " FROM batches WHERE state NOT IN ('done', 'failed', 'cancelled') ORDER BY id"
        ):
            entry = dict(row)
            for key in ("upload_expires_at", "download_expires_at"):
                if entry[key]:
                    left = datetime.fromisoformat(entry[key]) - now
                    entry[key.replace("_at", "_in_s")] = round(left.total_seconds())
            current.append(entry)
        recent = [
            dict(r)
            for r in conn.execute(
                "SELECT i.name AS file, i.job_type, i.state AS outcome, i.id_count AS ids,"
                " i.finished_at, i.out_stem, json_extract(i.error_json, '$.message') AS reason"
                " FROM inputs i WHERE i.state IN ('delivered', 'rejected')"
                " ORDER BY i.finished_at DESC, i.id DESC LIMIT 10"
            )
        ]
        marks = ",".join("?" * len(_RECENT_FAILURE_KINDS))
        failures = [
            dict(r)
            for r in conn.execute(
                f"SELECT at, kind, batch_id, input_id, detail_json FROM events"  # noqa: S608
                f" WHERE kind IN ({marks}) ORDER BY id DESC LIMIT 10",
                _RECENT_FAILURE_KINDS,
            )
        ]
        for failure in failures:
            failure["detail"] = json.loads(failure.pop("detail_json") or "{}")
    finally:
        conn.close()
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
            f"  batch {job['id']} {job['job_type']} [{job['files']}] {job['id_count']} IDs:"
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
            lines.append(f"    last error: {job['last_error']}")
    lines.append("recent outcomes:")
    if not report["recent"]:
        lines.append("  none")
    for item in report["recent"]:
        detail = (
            f"-> {item['out_stem']}.jsonl"
            if item["outcome"] == "delivered"
            else f"({item['reason']})"
        )
        lines.append(
            f"  {item['finished_at']}  {item['job_type']:6} {item['file']}:"
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
    layout = Layout(config.paths.inbox, config.paths.outbox, config.paths.state_dir)
    try:
        report = collect(layout)
    except sqlite3.Error as error:
        print(f"compliance-orchestrator: cannot read {layout.db_path}: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True, default=str))
    else:
        print(render(report))
    return 0
