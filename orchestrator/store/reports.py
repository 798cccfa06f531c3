"""Read-only queries for the `status` and `jobs` commands, on either backend.

One set of queries in portable SQL (`?` placeholders, no JSON functions: JSON columns are
parsed here, file lists gathered by a second query) runs on a `Reader`: SQLite's is a
connection opened with `mode=ro` (`open_readonly`), PostgreSQL's a READ ONLY transaction
(store/pg_reports.py). Either way the reports work while the daemons run, never take a lock
or the lease, and never create or change the database. No query selects a signed URL
(upload_url, download_url, upload_session_url), so none can be printed.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence, Sized
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from orchestrator.core.model import ClusterView, HostRow, InputState
from orchestrator.layout import Layout
from orchestrator.store.rows import FINAL_BATCH_STATES, FINAL_INPUT_STATES, sql_list

_FINAL = sql_list(FINAL_BATCH_STATES)
_FINISHED_INPUTS = sql_list(FINAL_INPUT_STATES)
_CHUNK = 500  # ids per `IN (...)`: far below either engine's limit on parameters


class Reader(Protocol):
    """A read-only view of one store: rows as dicts, whether a table exists (a database from
    before a migration lacks some), and the database's clock (None: use the caller's)."""

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    def has_table(self, name: str) -> bool: ...

    def db_now(self) -> datetime | None: ...

    def schema_version(self) -> int: ...


class SqliteReader:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return [dict(row) for row in self.conn.execute(sql, tuple(params))]

    def has_table(self, name: str) -> bool:
        return self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table'"
                                 " AND name = ?", (name,)).fetchone() is not None

    def db_now(self) -> datetime | None:
        return None

    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])


@contextmanager
def open_readonly(db_path: Path) -> Iterator[sqlite3.Connection]:
    """The SQLite state database, read-only; rows addressable by column name."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    conn.row_factory = sqlite3.Row
    try:
        yield conn
    finally:
        conn.close()


def store_location(layout: Layout) -> str:
    """Where the state is, for `state_db` and messages: the SQLite file, or the PostgreSQL
    server and database (never the password)."""
    if layout.store is not None and layout.store.backend == "postgresql":
        from orchestrator.store.postgresql import describe_dsn

        return f"postgresql: {describe_dsn(layout.store.dsn)}"
    return str(layout.db_path)


@contextmanager
def open_reports(layout: Layout, environ: Mapping[str, str] = os.environ
                 ) -> Iterator[Reader | None]:
    """The configured store, read-only; None when it holds no state yet (no state.db, or a
    PostgreSQL database the daemon has not migrated). PostgreSQL: StoreUnavailable when the
    server cannot be reached or refuses us, ConfigError when the password cannot be read."""
    if layout.store is not None and layout.store.backend == "postgresql":
        from orchestrator.credentials import load_db_password
        from orchestrator.store.pg_reports import open_pg_reader

        password = load_db_password(layout.store, environ)
        with open_pg_reader(layout.store.dsn, password) as pg:
            yield pg if pg.has_table("inputs") else None
        return
    if not layout.db_path.exists():
        yield None
        return
    with open_readonly(layout.db_path) as conn:
        yield SqliteReader(conn)


def _chunks(ids: Sequence[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield list(ids[start:start + _CHUNK])


def _marks(values: Sized) -> str:
    return ",".join("?" * len(values))


def _json_field(text: str | None, key: str) -> Any:
    """`key` of a JSON object column (None when absent, not an object, or not JSON)."""
    try:
        document = json.loads(text) if text else None
    except ValueError:
        return None
    return document.get(key) if isinstance(document, dict) else None


def _when(value: Any) -> datetime | None:
    """A timestamp column: ISO text (SQLite) or a timestamptz (PostgreSQL's lease, hosts)."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def input_counts(reader: Reader) -> dict[str, dict[str, int]]:
    """{job_type: {state: inputs}}."""
    counts: dict[str, dict[str, int]] = {}
    for row in reader.rows(
        "SELECT job_type, state, COUNT(*) AS n FROM inputs GROUP BY job_type, state"
        " ORDER BY job_type, state"
    ):
        # Every state of a type that has inputs, zeros included (as the text shows them).
        states = counts.setdefault(row["job_type"], dict.fromkeys(map(str, InputState), 0))
        states[row["state"]] = int(row["n"])
    return counts


def files_of(reader: Reader, batch_ids: Sequence[int]) -> dict[int, list[dict[str, str]]]:
    """{batch_id: its files ({name, out_stem}) in input order}."""
    found: dict[int, list[dict[str, str]]] = {}
    for chunk in _chunks(batch_ids):
        for row in reader.rows(
            "SELECT DISTINCT bi.batch_id, i.id, i.name, i.out_stem FROM batch_inputs bi"  # noqa: S608
            f" JOIN inputs i ON i.id = bi.input_id WHERE bi.batch_id IN ({_marks(chunk)})"
            " ORDER BY bi.batch_id, i.id", chunk,
        ):
            found.setdefault(row["batch_id"], []).append(
                {"name": row["name"], "out_stem": row["out_stem"]})
    return found


def open_batches(reader: Reader) -> list[dict[str, Any]]:
    """Unfinished batches, oldest first, with the names of their files (`files`, a list)."""
    batches = reader.rows(
        "SELECT id, job_type, state, attempt, x_job_id, x_status, id_count, created_at,"  # noqa: S608
        " upload_expires_at, download_expires_at, next_attempt_at, poll_count, last_error,"
        f" last_http_status FROM batches WHERE state NOT IN ({_FINAL}) ORDER BY id"
    )
    files = files_of(reader, [b["id"] for b in batches])
    for batch in batches:
        batch["files"] = [f["name"] for f in files.get(batch["id"], [])]
    return batches


def recent_outcomes(reader: Reader, limit: int = 10) -> list[dict[str, Any]]:
    """The last inputs delivered or rejected, newest first, with the rejection's reason code
    and message."""
    outcomes = reader.rows(
        "SELECT i.name AS file, i.job_type, i.state AS outcome, i.id_count AS ids,"  # noqa: S608
        " i.finished_at, i.out_stem, i.error_json"
        f" FROM inputs i WHERE i.state IN ({_FINISHED_INPUTS})"
        " ORDER BY COALESCE(i.finished_at, '') DESC, i.id DESC LIMIT ?", (limit,),
    )
    for item in outcomes:
        error = item.pop("error_json")
        item["reason"], item["message"] = (_json_field(error, "reason"),
                                           _json_field(error, "message"))
    return outcomes


def recent_events(reader: Reader, kinds: Sequence[str], limit: int = 10) -> list[dict[str, Any]]:
    """The last events of these kinds, newest first, `detail` parsed."""
    events = reader.rows(
        f"SELECT at, kind, batch_id, input_id, detail_json FROM events"  # noqa: S608
        f" WHERE kind IN ({_marks(kinds)}) ORDER BY id DESC LIMIT ?", (*kinds, limit),
    )
    for event in events:
        event["detail"] = json.loads(event.pop("detail_json") or "{}")
    return events


_BATCH_HISTORY_SQL = """
SELECT b.id, b.key, b.job_type, b.state, b.attempt, b.id_count, b.created_at, b.finished_at,
       b.next_attempt_at, b.x_job_id, b.x_status, b.last_error, b.last_http_status,
       (SELECT e.detail_json FROM events e
         WHERE e.batch_id = b.id AND e.kind = 'download.completed'
         ORDER BY e.id DESC LIMIT 1) AS download_detail,
       (SELECT e.detail_json FROM events e
         WHERE e.batch_id = b.id AND e.kind = 'operator.cancel'
         ORDER BY e.id DESC LIMIT 1) AS cancel_detail
  FROM batches b ORDER BY b.id DESC LIMIT ?
"""


def batch_history(reader: Reader, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` batches: their files ({name, out_stem}), IDs affected (from the
    download event), and the cancel event's detail (JSON text)."""
    rows = reader.rows(_BATCH_HISTORY_SQL, (limit,))
    files = files_of(reader, [r["id"] for r in rows])
    for row in rows:
        row["files"] = files.get(row["id"], [])
        row["affected"] = _json_field(row.pop("download_detail"), "affected")
    return rows


def batch_total(reader: Reader) -> int:
    return int(reader.rows("SELECT COUNT(*) AS n FROM batches")[0]["n"])


def remote_jobs_by_batch(reader: Reader, batch_ids: Sequence[int]
                         ) -> dict[int, list[dict[str, Any]]]:
    """{batch_id: its remote jobs in attempt order}, without URLs."""
    found: dict[int, list[dict[str, Any]]] = {}
    for chunk in _chunks(batch_ids):
        for job in reader.rows(
            "SELECT batch_id, x_job_id, attempt, final_status, created_at FROM remote_jobs"  # noqa: S608
            f" WHERE batch_id IN ({_marks(chunk)}) ORDER BY batch_id, attempt", chunk,
        ):
            found.setdefault(job["batch_id"], []).append(
                {"x_job_id": job["x_job_id"], "attempt": job["attempt"],
                 "status": job["final_status"], "created_at": job["created_at"]}
            )
    return found


def pause_state(reader: Reader) -> dict[str, Any] | None:
    """The maintenance pause ({since, by, reason}), None when running (or on a database from
    before migration 4, which has no settings table: it cannot be paused)."""
    if not reader.has_table("settings"):
        return None
    rows = reader.rows("SELECT value_json FROM settings WHERE key = 'pause'")
    return dict(json.loads(rows[0]["value_json"])) if rows else None


def queued_inputs(reader: Reader) -> list[dict[str, Any]]:
    """Inputs waiting for a batch (claimed or queued), oldest first: the names `withdraw`
    takes."""
    return reader.rows(
        "SELECT id, name, job_type, state, id_count AS ids, queued_at FROM inputs"
        " WHERE state IN ('claimed', 'queued') ORDER BY id"
    )


_HOOK_COLUMNS = ("id, kind, target, event, input_id, batch_id, idempotency_key, state,"
                 " attempts, max_attempts, next_at, last_error, created_at, finished_at")


def hook_runs_report(reader: Reader, limit: int = 20,
                     batch_ids: Sequence[int] = ()) -> dict[str, Any]:
    """{counts: {state: n}, pending: [...], failed: [...]} of hook and webhook runs (empty on
    a database from before migration 6); with `batch_ids`, {by_batch: {id: {state: n}}}."""
    if not reader.has_table("hook_runs"):
        return {"counts": {}, "pending": [], "failed": []}
    counts = {r["state"]: int(r["n"]) for r in reader.rows(
        "SELECT state, COUNT(*) AS n FROM hook_runs GROUP BY state ORDER BY state")}
    listed = {
        name: reader.rows(
            f"SELECT {_HOOK_COLUMNS} FROM hook_runs WHERE state IN ({_marks(states)})"  # noqa: S608
            " ORDER BY id DESC LIMIT ?", (*states, limit))
        for name, states in (("pending", ("pending", "running")), ("failed", ("failed",)))
    }
    if not batch_ids:
        return {"counts": counts, **listed}
    by_batch: dict[int, dict[str, int]] = {}
    for chunk in _chunks(batch_ids):
        for r in reader.rows(
            f"SELECT batch_id, state, COUNT(*) AS n FROM hook_runs"  # noqa: S608
            f" WHERE batch_id IN ({_marks(chunk)}) GROUP BY batch_id, state"
            " ORDER BY batch_id, state", chunk,
        ):
            by_batch.setdefault(r["batch_id"], {})[r["state"]] = int(r["n"])
    return {"counts": counts, **listed, "by_batch": by_batch}


def cluster_view(reader: Reader, now: datetime) -> ClusterView:
    """The leader lease and the hosts' heartbeats, judged by the database's clock where it
    has one (PostgreSQL: the lease's own), else at `now` (a database from before migration
    0005 has neither table: nobody leads, no hosts)."""
    if not (reader.has_table("lease") and reader.has_table("hosts")):
        return ClusterView(None, 0, None, None, None, now)
    now = reader.db_now() or now
    lease = reader.rows("SELECT holder, epoch, acquired_at, renewed_at, expires_at FROM lease"
                        " WHERE name = 'leader'")
    hosts = tuple(HostRow(r["host_id"], r["role"], r["pid"], r["version"],
                          _when(r["started_at"]), _when(r["last_seen"])) for r in reader.rows(
        "SELECT host_id, role, pid, version, started_at, last_seen FROM hosts ORDER BY host_id"))
    if not lease:
        return ClusterView(None, 0, None, None, None, now, hosts)
    row = lease[0]
    return ClusterView(row["holder"], int(row["epoch"]), _when(row["acquired_at"]),
                       _when(row["renewed_at"]), _when(row["expires_at"]), now, hosts)
