"""Plain data: job types, local states, the remote job object. No I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class JobType(StrEnum):
    TWEETS = "tweets"
    USERS = "users"


class RemoteStatus(StrEnum):
    CREATED = "created"
    IN_PROGRESS = "in_progress"
    COMPLETE = "complete"
    FAILED = "failed"
    EXPIRED = "expired"


class BatchState(StrEnum):
    """Local lifecycle of a batch: one remote job's worth of work (one or more inputs)."""

    QUEUED = "queued"            # waiting for its turn (or for next_attempt_at)
    CREATING = "creating"        # intent persisted; POST /2/compliance/jobs may have been sent
    UPLOADING = "uploading"      # remote job known; IDs going to upload_url
    WAITING = "waiting"          # uploaded; polling until complete/failed/expired
    DOWNLOADING = "downloading"  # complete; streaming the results to the spool
    DELIVERING = "delivering"    # results verified locally; writing the outbox
    DONE = "done"
    FAILED = "failed"            # gave up; inputs went to outbox/rejected
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (BatchState.DONE, BatchState.FAILED, BatchState.CANCELLED)


class InputState(StrEnum):
    """Lifecycle of one claimed input file."""

    CLAIMING = "claiming"    # row written; the rename into the spool may or may not have happened
    CLAIMED = "claimed"      # in the spool, not yet validated
    QUEUED = "queued"        # validated; normalised upload body ready; waiting for a batch
    BATCHED = "batched"      # part of a batch that is not final yet
    DELIVERED = "delivered"  # results durably in the outbox; spool copy removed
    REJECTED = "rejected"    # moved to outbox/rejected with <file>.error.json

    @property
    def is_final(self) -> bool:
        return self in (InputState.DELIVERED, InputState.REJECTED)


def parse_timestamp(value: str) -> datetime:
    """Parse the API's timestamps: `2021-10-07T07:41:18.000Z` and `2019-03-02T03:37:59+00:00`."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_timestamp(value: datetime) -> str:
    """The API's style: whole seconds with `.000Z` (milliseconds kept when present)."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class RemoteJob:
    """A compliance job as the X API reports it. URLs are secrets-bearing: never log them."""

    id: str
    type: JobType
    status: RemoteStatus | str  # unknown future statuses are kept as plain strings
    created_at: datetime
    upload_url: str
    upload_expires_at: datetime
    download_url: str
    download_expires_at: datetime
    resumable: bool = False
    name: str | None = None
    error: str | None = None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> RemoteJob:
        """Build from a job response `data` object; KeyError/ValueError if malformed."""
        status_text = str(data["status"])
        try:
            status: RemoteStatus | str = RemoteStatus(status_text)
        except ValueError:
            status = status_text
        return cls(
            id=str(data["id"]),
            type=JobType(data["type"]),
            status=status,
            created_at=parse_timestamp(data["created_at"]),
            upload_url=str(data["upload_url"]),
            upload_expires_at=parse_timestamp(data["upload_expires_at"]),
            download_url=str(data["download_url"]),
            download_expires_at=parse_timestamp(data["download_expires_at"]),
            resumable=bool(data.get("resumable", False)),
            name=data.get("name"),
            error=data.get("error"),
        )


@dataclass(frozen=True, slots=True)
class Batch:
    """One remote job's worth of work, as persisted. `key` names the remote job (with attempt)."""

    id: int
    key: str
    job_type: JobType
    state: BatchState
    attempt: int = 0               # remote jobs created for this batch so far
    stage_retries: int = 0         # counted retryable errors in the current stage
    stage_waits: int = 0           # uncounted waits (rate limit, conflict) in the current stage
    next_attempt_at: datetime | None = None
    id_count: int = 0
    upload_bytes: int = 0
    upload_name: str = ""          # the upload body, in the spool
    x_job_id: str | None = None
    x_job_name: str | None = None
    x_status: str | None = None
    x_created_at: datetime | None = None
    upload_url: str | None = None
    upload_expires_at: datetime | None = None
    download_url: str | None = None
    download_expires_at: datetime | None = None
    resumable: bool = False
    upload_session_url: str | None = None
    poll_count: int = 0
    uploaded_at: datetime | None = None
    completed_at: datetime | None = None
    last_error: str | None = None
    last_http_status: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def remote_name(self, attempt: int) -> str:
        """The `name` sent with attempt N; lets a restart adopt a job whose id was never saved."""
        return f"{self.key}-{attempt}"


@dataclass(frozen=True, slots=True)
class InputFile:
    """One claimed input file, as persisted."""

    id: int
    job_type: JobType
    name: str
    out_stem: str
    state: InputState
    spool_name: str
    inode: int
    size_bytes: int
    input_sha256: str | None = None
    id_count: int | None = None
    bad_line_count: int = 0
    body_sha256: str | None = None  # of the normalised upload body (duplicate detection)
    # The inbox name as raw bytes, and the file's mtime/ctime when claimed (None: older rows).
    name_bytes: bytes | None = None
    mtime_ns: int | None = None
    ctime_ns: int | None = None
    report: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    claimed_at: datetime | None = None
    queued_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def body_is_input(self) -> bool:
        """Validated, and its upload body is the claimed file byte for byte (no copy made)."""
        return self.body_sha256 is not None and self.body_sha256 == self.input_sha256

    @property
    def ids_name(self) -> str:
        """The normalised upload body made from this input, in the spool: the claimed file
        itself when that is already normalised, else its `.ids` copy."""
        return self.spool_name if self.body_is_input else f"{self.spool_name}.ids"

    @property
    def copy_name(self) -> str:
        """The `.ids` copy's name (whether or not one exists): what is safe to delete."""
        return f"{self.spool_name}.ids"


@dataclass(frozen=True, slots=True)
class HostRow:
    """One host's heartbeat row: its role ('leader', 'standby', 'stopped'), process and
    program version, when that process started and when it last reported."""

    host_id: str
    role: str
    pid: int | None
    version: str | None
    started_at: datetime | None
    last_seen: datetime | None


@dataclass(frozen=True, slots=True)
class ClusterView:
    """The leader lease and the hosts, as the store saw them at `db_now` (the database's
    clock: hosts' own clocks never matter)."""

    holder: str | None
    epoch: int
    acquired_at: datetime | None
    renewed_at: datetime | None
    expires_at: datetime | None
    db_now: datetime
    hosts: tuple[HostRow, ...] = ()

    @property
    def leader(self) -> str | None:
        """The holder while its lease runs, else None (expired or released)."""
        if self.holder is None or self.expires_at is None or self.expires_at <= self.db_now:
            return None
        return self.holder

    @property
    def lease_age_s(self) -> float | None:
        """Seconds since the lease was last renewed (None: nobody holds it)."""
        if self.leader is None or self.renewed_at is None:
            return None
        return max(0.0, (self.db_now - self.renewed_at).total_seconds())
