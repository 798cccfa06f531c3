"""`status`: queue, current jobs, deadlines, recent outcomes, read from the state database.

Reads the configured store through its read-only reports (SQLite `mode=ro`, PostgreSQL a
READ ONLY transaction), so it works while the daemons run and never takes a daemon's lock or
the leader lease. Signed URLs are never selected, so they cannot be printed. On PostgreSQL
it starts with the cluster: the leader, the standbys, the lease's age, each host's heartbeat.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator.clock import SystemClock, human_duration, rfc3339
from orchestrator.config import load_config
from orchestrator.core.model import ClusterView
from orchestrator.daemon.lock import lock_file_name
from orchestrator.errors import ConfigError
from orchestrator.files.inbox import printable
from orchestrator.layout import Layout
from orchestrator.store import reports
from orchestrator.store.opening import DATABASE_ERRORS
from orchestrator.store.postgresql import StoreUnavailable

# Rejections are not listed here: "recent outcomes" shows each with its reason already.
_RECENT_FAILURE_KINDS = (
    "step.retry",
    "job.failed",
    "job.expired",
    "job.abandoned",
    "batch.gave_up",
    "xapi.auth_failed",
    "outbox.write_failed",
)


def daemon_pid(state_dir: Path, lock_name: str = "daemon.lock") -> int | None:
    """PID of the running daemon, judged by whether its lock is held."""
    lock_path = state_dir / lock_name
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


# Detail keys that change on every retry of the same problem: ignored when collapsing repeats.
_VOLATILE_DETAIL = frozenset({"attempt", "retry_in_s", "resume_at", "remaining_s"})
_TIME_KEYS = ("created_at", "upload_expires_at", "download_expires_at", "next_attempt_at")


def collapse_repeats(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive events of the same kind, batch and problem as one row with a `count`
    (newest first; `first_at` is when the run of repeats began), as the log says it once."""
    rows: list[dict[str, Any]] = []
    for event in events:
        same = {k: v for k, v in event["detail"].items() if k not in _VOLATILE_DETAIL}
        last = rows[-1] if rows else None
        if (last is not None and last["kind"] == event["kind"]
                and last["batch_id"] == event["batch_id"]
                and last["input_id"] == event["input_id"] and last["_same"] == same):
            last["count"] += 1
            last["first_at"] = event["at"]
            continue
        rows.append({**event, "count": 1, "first_at": event["at"], "_same": same})
    for row in rows:
        del row["_same"]
    return rows


def cluster_report(view: ClusterView) -> dict[str, Any]:
    """The leader, the standbys, the lease's age and each host's last heartbeat."""
    def age(at: datetime | None) -> float | None:
        return None if at is None else round((view.db_now - at).total_seconds(), 1)

    hosts = [{"host_id": h.host_id, "role": h.role, "pid": h.pid, "version": h.version,
              "started_at": rfc3339(h.started_at), "last_seen": rfc3339(h.last_seen),
              "last_seen_age_s": age(h.last_seen)} for h in view.hosts]
    expires = view.expires_at
    return {
        "leader": view.leader, "epoch": view.epoch,
        "lease_age_s": None if view.lease_age_s is None else round(view.lease_age_s, 1),
        "lease_expires_in_s": (None if view.leader is None or expires is None
                               else round((expires - view.db_now).total_seconds(), 1)),
        "standbys": [h["host_id"] for h in hosts
                     if h["role"] == "standby" and h["host_id"] != view.leader],
        "hosts": hosts,
    }


def _render_cluster(cluster: dict[str, Any]) -> list[str]:
    if cluster["leader"] is None:
        head = "cluster: no leader (the lease is free or expired: a host takes it next round)"
    else:
        head = (f"cluster: leader {cluster['leader']} (epoch {cluster['epoch']}, lease renewed"
                f" {human_duration(cluster['lease_age_s'] or 0)} ago, expires in"
                f" {human_duration(cluster['lease_expires_in_s'] or 0)})")
    lines = [head, f"  standbys: {', '.join(cluster['standbys']) or 'none'}"]
    for host in cluster["hosts"]:
        seen = host["last_seen_age_s"]
        lines.append(f"  host {printable(host['host_id'])}: {host['role']}, pid {host['pid']},"
                     f" version {host['version']}, last heartbeat "
                     f"{'-' if seen is None else human_duration(seen) + ' ago'}")
    return lines


def no_state_note(layout: Layout) -> str:
    """What `status` and `jobs` say before the first daemon has run on this store."""
    if layout.store is not None and layout.store.backend == "postgresql":
        return ("no state in the PostgreSQL database yet (its tables are created when a daemon"
                " first starts, or by `migrate`)")
    return "no state database yet"


def collect(layout: Layout, now: datetime, *, with_files: bool = False,
            lock_name: str | None = None) -> dict[str, Any]:
    """The report of `status`, from the configured store (either backend), read-only."""
    report: dict[str, Any] = {
        "daemon_pid": daemon_pid(layout.state_dir, lock_name or lock_file_name(layout.host_id)),
        "state_db": reports.store_location(layout),
    }
    with reports.open_reports(layout) as reader:
        if reader is None:
            report.update(queue={}, current=[], recent=[], failures=[],
                          note=no_state_note(layout))
            if with_files:
                report["queued_files"] = []
            return report
        queue = reports.input_counts(reader)
        current = reports.open_batches(reader)
        recent = reports.recent_outcomes(reader, 10)
        failures = collapse_repeats(reports.recent_events(reader, _RECENT_FAILURE_KINDS, 30))[:10]
        paused = reports.pause_state(reader)
        queued = reports.queued_inputs(reader) if with_files else None
        hooks = reports.hook_runs_report(reader)
        cluster = cluster_report(reports.cluster_view(reader, now))
    for entry in current:
        for key in ("upload_expires_at", "download_expires_at", "next_attempt_at"):
            if entry[key]:
                left = round((datetime.fromisoformat(entry[key]) - now).total_seconds())
                entry[key.removesuffix("_at") + "_in_s"] = left
                entry[key.removesuffix("_at") + "_in"] = human_duration(left)
        for key in _TIME_KEYS:
            entry[key] = rfc3339(entry[key])
    for item in recent:
        item["finished_at"] = rfc3339(item["finished_at"])
        # The internal stem of a rejected input (`name#rejected-5`) is not a file anyone has.
        if item["outcome"] != "delivered":
            item["out_stem"] = None
    for failure in failures:
        failure["at"], failure["first_at"] = rfc3339(failure["at"]), rfc3339(failure["first_at"])
    for run in (*hooks["pending"], *hooks["failed"]):
        for key in ("next_at", "created_at", "finished_at"):
            run[key] = rfc3339(run[key])
    on_postgresql = layout.store is not None and layout.store.backend == "postgresql"
    report.update(queue=queue, current=current, recent=recent, failures=failures,
                  paused=paused, hooks=hooks, cluster=cluster,
                  several_hosts=on_postgresql or len(cluster["hosts"]) > 1)
    if queued is not None:
        for row in queued:
            row["queued_at"] = rfc3339(row["queued_at"])
        report["queued_files"] = queued
    return report


def _problem_subject(failure: dict[str, Any]) -> str:
    if failure["batch_id"] is not None:
        return f"batch {failure['batch_id']}"
    if failure["input_id"] is not None:
        return f"input {failure['input_id']}"
    return "-"


def _without_name(message: str, name: str) -> str:
    """A rejection's message without the file name it starts with (the line names it)."""
    prefix = f"{name}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def problem_text(detail: dict[str, Any]) -> str:
    """An event's detail in words: `upload: RetryableError, HTTP 503: reason`."""
    rest = {k: v for k, v in detail.items() if v is not None and k not in _VOLATILE_DETAIL}
    stage = rest.pop("stage", None)
    words = []
    if "error" in rest:
        words.append(str(rest.pop("error")))
    if "http_status" in rest:
        words.append(f"HTTP {rest.pop('http_status')}")
    if "x_job_id" in rest:
        words.append(f"remote {rest.pop('x_job_id')}")
    reason = rest.pop("message", None) or rest.pop("reason", None)  # the words, if any
    rest.pop("reason", None)
    words.extend(f"{key} {json.dumps(value) if not isinstance(value, str) else value}"
                 for key, value in sorted(rest.items()))
    text = ", ".join(words)
    if reason:
        text = f"{text}: {reason}" if text else str(reason)
    if stage:
        text = f"{stage}: {text}" if text else str(stage)
    return text or "-"


def render(report: dict[str, Any]) -> str:
    lines = []
    pid = report["daemon_pid"]
    lines.append(f"daemon: {'running (pid ' + str(pid) + ')' if pid else 'not running'}")
    if report.get("note"):
        lines.append(report["note"])
        return "\n".join(lines)
    # One host on SQLite is no cluster: its lease and heartbeat are only in --json.
    if report.get("several_hosts") and report["cluster"]["hosts"]:
        lines.extend(_render_cluster(report["cluster"]))
    paused = report.get("paused")
    if paused:
        lines.append(
            f"PAUSED since {paused['since']} by {paused['by']}"
            + (f" ({printable(paused['reason'])})" if paused.get("reason") else "")
            + ": no new remote jobs start; `resume` to continue"
        )
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
    if "queued_files" in report:
        lines.append("queued files (not yet in a job):")
        if not report["queued_files"]:
            lines.append("  none")
        for row in report["queued_files"]:
            lines.append(
                f"  {row['queued_at'] or '-'}  {row['job_type']:6} {printable(row['name'])}"
                f"  ({row['ids']} IDs, {row['state']})"
            )
    lines.append("current jobs:")
    if not report["current"]:
        lines.append("  none")
    for job in report["current"]:
        lines.append(
            f"  batch {job['id']} {job['job_type']} [{printable(', '.join(job['files']))}]"
            f" {job['id_count']} IDs:"
            f" {job['state']}, attempt {job['attempt']}, remote {job['x_job_id'] or '-'}"
            f" ({job['x_status'] or '-'}), polls {job['poll_count']}"
        )
        if "upload_expires_in" in job and job["state"] in ("creating", "uploading"):
            left = job["upload_expires_in_s"]
            lines.append(f"    upload window closes in {job['upload_expires_in']}" if left >= 0
                         else f"    upload window closed {human_duration(-left)} ago")
        if "download_expires_in" in job:
            left = job["download_expires_in_s"]
            lines.append(
                f"    results must be downloaded within {job['download_expires_in']}"
                f" (by {job['download_expires_at']})" if left >= 0 else
                f"    results expired {human_duration(-left)} ago"
                f" ({job['download_expires_at']})"
            )
        if job["next_attempt_at"] and job["next_attempt_in_s"] > 0:
            lines.append(f"    next step in {job['next_attempt_in']}"
                         f" (at {job['next_attempt_at']})")
        if job["last_error"]:
            lines.append(f"    last error: {printable(job['last_error'])}")
    lines.append("recent outcomes:")
    if not report["recent"]:
        lines.append("  none")
    for item in report["recent"]:
        if item["outcome"] == "delivered":
            detail = f"-> {printable(item['out_stem'])}.jsonl"
        else:
            message = _without_name(item.get("message") or "", item["file"])
            detail = f"({printable((item['reason'] or '-') + (': ' + message if message else ''))})"
        lines.append(
            f"  {item['finished_at'] or '-'}  {item['job_type']:6} {printable(item['file'])}:"
            f" {item['outcome']} {detail}"
        )
    lines.extend(_hook_lines(report.get("hooks") or {}))
    if report["failures"]:
        lines.append("recent problems:")
        for failure in report["failures"]:
            repeated = (
                f"  x{failure['count']} since {failure['first_at']}"
                if failure["count"] > 1 else ""
            )
            lines.append(
                f"  {failure['at']}  {failure['kind']}  {_problem_subject(failure)}"
                f"  {printable(problem_text(failure['detail']))}{repeated}"
            )
    return "\n".join(lines)


def _hook_lines(hooks: dict[str, Any]) -> list[str]:
    counts = hooks.get("counts") or {}
    if not counts:
        return []
    lines = ["hook runs: " + ", ".join(f"{counts.get(s, 0)} {s}"
                                      for s in ("pending", "running", "done", "failed"))]
    for run in hooks.get("pending", []):
        lines.append(f"  {run['state']} #{run['id']} {run['target']} on {run['event']}"
                     f" attempt {run['attempts']}/{run['max_attempts']}"
                     f" next {run['next_at'] or '-'}"
                     + (f": {printable(run['last_error'])}" if run["last_error"] else ""))
    for run in hooks.get("failed", []):
        lines.append(f"  FAILED #{run['id']} {run['target']} on {run['event']}"
                     f" input {run['input_id'] or '-'} after {run['attempts']} attempts:"
                     f" {printable(run['last_error'] or '-')}")
    if hooks.get("failed"):
        lines.append("  `retry-hooks` runs the failed ones again (`retry-hooks ID`: one)")
    return lines


def status_command(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"compliance-orchestrator: {error}", file=sys.stderr)
        return 2
    layout = Layout.from_config(config)
    try:
        report = collect(layout, SystemClock().now(), with_files=args.files)
    except StoreUnavailable as error:  # before ConfigError: the server is down, not the config
        print(f"compliance-orchestrator: {error}", file=sys.stderr)
        return 1
    except ConfigError as error:  # e.g. the database password cannot be read
        print(f"compliance-orchestrator: {error}", file=sys.stderr)
        return 2
    except DATABASE_ERRORS as error:
        text = " ".join(str(error).split())
        print(f"compliance-orchestrator: cannot read {reports.store_location(layout)}: {text}",
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"ok": True, **report}, indent=2, sort_keys=True, default=str))
    else:
        print(render(report))
    return 0
