"""Read-only queries for the `status` and `jobs` commands.

They run on a connection opened with `mode=ro` (see `open_readonly`): they work while the
daemon runs, never take its lock, and never create or change the database. No query selects
a signed URL (upload_url, download_url, upload_session_url), so none can be printed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator.clock import from_iso
from orchestrator.core.model import ClusterView, HostRow
from orchestrator.store.rows import FINAL_BATCH_STATES, FINAL_INPUT_STATES, sql_list

_FINAL = sql_list(FINAL_BATCH_STATES)
_FINISHED_INPUTS = sql_list(FINAL_INPUT_STATES)


@contextmanager
def open_readonly(db_path: Path) -> Iterator[sqlite3.Connection]:
    """The state database, read-only; rows addressable by column name."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    conn.row_factory = sqlite3.Row
    try:
        yield conn
    finally:
        conn.close()


def input_counts(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
    """{job_type: {state: inputs}}."""
    counts: dict[str, dict[str, int]] = {}
    for row in conn.execute(
        "SELECT job_type, state, COUNT(*) AS n FROM inputs GROUP BY job_type, state"
    ):
        counts.setdefault(row["job_type"], {})[row["state"]] = row["n"]
    return counts


def open_batches(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Unfinished batches, oldest first, with the names of their files (a JSON list)."""
    return [dict(row) for row in conn.execute(
        "SELECT id, job_type, state, attempt, x_job_id, x_status, id_count, created_at,"  # noqa: S608
        " upload_expires_at, download_expires_at, next_attempt_at, poll_count, last_error,"
        " last_http_status, (SELECT json_group_array(i.name) FROM (SELECT DISTINCT i.id, i.name"
        " FROM batch_inputs bi JOIN inputs i ON i.id = bi.input_id"
        " WHERE bi.batch_id = batches.id ORDER BY i.id) i) AS files"
        f" FROM batches WHERE state NOT IN ({_FINAL}) ORDER BY id"
    )]


def recent_outcomes(conn: sqlite3.Connection, limit: int = 10) -> list[dict[str, Any]]:
    """The last inputs delivered or rejected, newest first."""
    return [dict(row) for row in conn.execute(
        "SELECT i.name AS file, i.job_type, i.state AS outcome, i.id_count AS ids,"  # noqa: S608
        " i.finished_at, i.out_stem, json_extract(i.error_json, '$.reason') AS reason,"
        " json_extract(i.error_json, '$.message') AS message"
        f" FROM inputs i WHERE i.state IN ({_FINISHED_INPUTS})"
        " ORDER BY i.finished_at DESC, i.id DESC LIMIT ?", (limit,),
    )]


def recent_events(
    conn: sqlite3.Connection, kinds: Sequence[str], limit: int = 10
) -> list[dict[str, Any]]:
    """The last events of these kinds, newest first, `detail` parsed."""
    marks = ",".join("?" * len(kinds))
    events = [dict(row) for row in conn.execute(
        f"SELECT at, kind, batch_id, input_id, detail_json FROM events"  # noqa: S608
        f" WHERE kind IN ({marks}) ORDER BY id DESC LIMIT ?", (*kinds, limit),
    )]
    for event in events:
        event["detail"] = json.loads(event.pop("detail_json") or "{}")
    return events


_BATCH_HISTORY_SQL = """
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


def batch_history(conn: sqlite3.Connection, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` batches: their files (JSON), IDs affected, and the cancel event."""
    return [dict(row) for row in conn.execute(_BATCH_HISTORY_SQL, (limit,))]


def batch_total(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0])


def remote_jobs_by_batch(
    conn: sqlite3.Connection, batch_ids: Sequence[int]
) -> dict[int, list[dict[str, Any]]]:
    """{batch_id: its remote jobs in attempt order}, without URLs."""
    found: dict[int, list[dict[str, Any]]] = {}
    if not batch_ids:
        return found
    marks = ",".join("?" * len(batch_ids))
    for job in conn.execute(
        "SELECT batch_id, x_job_id, attempt, final_status, created_at FROM remote_jobs"  # noqa: S608
        f" WHERE batch_id IN ({marks}) ORDER BY batch_id, attempt", list(batch_ids),
    ):
        found.setdefault(job["batch_id"], []).append(
            {"x_job_id": job["x_job_id"], "attempt": job["attempt"],
             "status": job["final_status"], "created_at": job["created_at"]}
        )
    return found


def pause_state(conn: sqlite3.Connection) -> dict[str, Any] | None:
    """The maintenance pause ({since, by, reason}), None when running (or on a database from
    before migration 4, which has no settings table: it cannot be paused)."""
    try:
        row = conn.execute("SELECT value_json FROM settings WHERE key = 'pause'").fetchone()
    except sqlite3.OperationalError:
        return None
    return None if row is None else dict(json.loads(row["value_json"]))


def queued_inputs(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Inputs waiting for a batch (claimed or queued), oldest first: the names `withdraw`
    takes."""
    return [dict(row) for row in conn.execute(
        "SELECT id, name, job_type, state, id_count AS ids, queued_at FROM inputs"
        " WHERE state IN ('claimed', 'queued') ORDER BY id"
    )]


def hook_runs_report(conn: sqlite3.Connection, limit: int = 20,
                     batch_ids: Sequence[int] = ()) -> dict[str, Any]:
    """{counts: {state: n}, pending: [...], failed: [...]} of hook and webhook runs (empty on
    a database from before migration 6); with `batch_ids`, {by_batch: {id: {state: n}}}."""
    empty: dict[str, Any] = {"counts": {}, "pending": [], "failed": []}
    columns = ("id, kind, target, event, input_id, batch_id, idempotency_key, state, attempts,"
               " max_attempts, next_at, last_error, created_at, finished_at")
    try:
        counts = {r["state"]: r["n"] for r in conn.execute(
            "SELECT state, COUNT(*) AS n FROM hook_runs GROUP BY state")}
        listed = {
            state: [dict(r) for r in conn.execute(
                f"SELECT {columns} FROM hook_runs WHERE state IN ({marks})"  # noqa: S608
                " ORDER BY id DESC LIMIT ?", (*states, limit))]
            for state, states, marks in (("pending", ("pending", "running"), "?, ?"),
                                         ("failed", ("failed",), "?"))
        }
        by_batch: dict[int, dict[str, int]] = {}
        if batch_ids:
            marks = ",".join("?" * len(batch_ids))
            for r in conn.execute(
                f"SELECT batch_id, state, COUNT(*) AS n FROM hook_runs"  # noqa: S608
                f" WHERE batch_id IN ({marks}) GROUP BY batch_id, state", tuple(batch_ids)):
                by_batch.setdefault(r["batch_id"], {})[r["state"]] = r["n"]
    except sqlite3.OperationalError:
        return empty
    return {"counts": counts, **listed, **({"by_batch": by_batch} if batch_ids else {})}


def cluster_view(conn: sqlite3.Connection, now: datetime) -> ClusterView:
    """The leader lease and the hosts' heartbeats, judged at `now` (a database from before
    migration 0005 has neither: nobody leads, no hosts)."""
    try:
        lease = conn.execute(
            "SELECT holder, epoch, acquired_at, renewed_at, expires_at FROM lease"
            " WHERE name = 'leader'").fetchone()
        hosts = conn.execute(
            "SELECT host_id, role, pid, version, started_at, last_seen FROM hosts"
            " ORDER BY host_id").fetchall()
    except sqlite3.OperationalError:  # no such table
        return ClusterView(None, 0, None, None, None, now)
    rows = tuple(HostRow(r["host_id"], r["role"], r["pid"], r["version"],
                         from_iso(r["started_at"]), from_iso(r["last_seen"])) for r in hosts)
    if lease is None:
        return ClusterView(None, 0, None, None, None, now, rows)
    return ClusterView(lease["holder"], int(lease["epoch"]), from_iso(lease["acquired_at"]),
                       from_iso(lease["renewed_at"]), from_iso(lease["expires_at"]), now, rows)
