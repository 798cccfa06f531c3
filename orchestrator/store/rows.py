"""Row <-> model mapping for the state database: column sets, value encoding, row mappers.

The schema snapshot test (tests/store/test_schema.py) checks these against store/schema.sql, so a
migration that adds or drops a column fails there until this module follows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, Protocol

from orchestrator.clock import from_iso, iso
from orchestrator.core.model import Batch, BatchState, InputFile, InputState, JobType

# Columns a Decision (batches) or an input move (inputs) may set.
BATCH_COLUMNS: Final = frozenset(
    {
        "state", "attempt", "stage_retries", "stage_waits", "next_attempt_at", "x_job_id",
        "x_job_name", "x_status", "x_created_at", "upload_url", "upload_expires_at",
        "download_url", "download_expires_at", "resumable", "upload_session_url", "poll_count",
        "uploaded_at", "completed_at", "last_error", "last_http_status", "finished_at",
    }
)
INPUT_COLUMNS: Final = frozenset(
    {
        "state", "input_sha256", "id_count", "bad_line_count", "report_json", "error_json",
        "body_sha256", "queued_at", "finished_at",
        # A claimed file still being written is re-validated: its size and times then change.
        "size_bytes", "mtime_ns", "ctime_ns",
    }
)
# Columns the row mappers deliberately do not read, and why.
BATCH_UNMAPPED: Final = {
    "x_error": "never written (the remote job's error lives in remote_jobs.error)",
    "finished_at": "bookkeeping for reports; the model uses state and updated_at",
}
INPUT_UNMAPPED: Final[dict[str, str]] = {}

FINAL_BATCH_STATES: Final = tuple(s for s in BatchState if s.is_final)
FINAL_INPUT_STATES: Final = tuple(s for s in InputState if s.is_final)


def sql_list(values: Iterable[StrEnum]) -> str:
    """`'done', 'failed'`: enum values as SQL literals, for a fixed IN (...) list. Only for
    our own enums (their values are plain lower-case words), never for outside input."""
    words = [str(v) for v in values]
    assert all(w.replace("_", "").isalnum() for w in words)
    return ", ".join(f"'{w}'" for w in words)


class Row(Protocol):
    """A result row addressable by column name (sqlite3.Row, aiosqlite.Row, a dict)."""

    def __getitem__(self, key: str, /) -> Any: ...


@dataclass(frozen=True, slots=True)
class BatchPart:
    input: InputFile
    part: int
    first_id: int
    id_count: int


def db_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return value


def _json_or_none(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def batch_from_row(row: Row) -> Batch:
    return Batch(
        id=row["id"], key=row["key"], job_type=JobType(row["job_type"]),
        state=BatchState(row["state"]), attempt=row["attempt"],
        stage_retries=row["stage_retries"], stage_waits=row["stage_waits"],
        next_attempt_at=from_iso(row["next_attempt_at"]), id_count=row["id_count"],
        upload_bytes=row["upload_bytes"], upload_name=row["upload_name"],
        x_job_id=row["x_job_id"], x_job_name=row["x_job_name"], x_status=row["x_status"],
        x_created_at=from_iso(row["x_created_at"]), upload_url=row["upload_url"],
        upload_expires_at=from_iso(row["upload_expires_at"]), download_url=row["download_url"],
        download_expires_at=from_iso(row["download_expires_at"]),
        resumable=bool(row["resumable"]), upload_session_url=row["upload_session_url"],
        poll_count=row["poll_count"], uploaded_at=from_iso(row["uploaded_at"]),
        completed_at=from_iso(row["completed_at"]), last_error=row["last_error"],
        last_http_status=row["last_http_status"], created_at=from_iso(row["created_at"]),
        updated_at=from_iso(row["updated_at"]),
    )


def input_from_row(row: Row) -> InputFile:
    return InputFile(
        id=row["id"], job_type=JobType(row["job_type"]), name=row["name"],
        out_stem=row["out_stem"], state=InputState(row["state"]), spool_name=row["spool_name"],
        inode=row["inode"], size_bytes=row["size_bytes"], input_sha256=row["input_sha256"],
        id_count=row["id_count"], bad_line_count=row["bad_line_count"],
        body_sha256=row["body_sha256"],
        name_bytes=row["name_bytes"], mtime_ns=row["mtime_ns"], ctime_ns=row["ctime_ns"],
        report=_json_or_none(row["report_json"]), error=_json_or_none(row["error_json"]),
        claimed_at=from_iso(row["claimed_at"]), queued_at=from_iso(row["queued_at"]),
        finished_at=from_iso(row["finished_at"]),
    )
