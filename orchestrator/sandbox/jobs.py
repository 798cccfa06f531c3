"""Compliance jobs: creation, the lifecycle evaluated from the sandbox clock, the one-job rule.

Status is derived lazily from timestamps on every read, so moving the clock takes effect
immediately and no background task is needed:
  created --(upload committed)--> in_progress --(ready_at)--> complete | failed
  created --(upload_expires_at passes, nothing uploaded)--> expired (sticky once seen)
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from orchestrator.core.model import format_timestamp
from orchestrator.sandbox.clock import SandboxClock
from orchestrator.sandbox.config import SandboxConfig
from orchestrator.sandbox.ingest import IngestResult, StoredObject
from orchestrator.sandbox.signing import (
    BUCKETS,
    DOWNLOAD_HEADERS,
    RESUMABLE_HEADERS,
    UPLOAD_HEADERS,
    Signer,
)
from orchestrator.sandbox.truth import TWEPOCH_MS

STATUSES = ("created", "in_progress", "complete", "failed", "expired")


def whole_seconds(value: float) -> int:
    return max(1, math.ceil(value))


def app_id_for(token: str) -> str:
    """The constant `{N}` in object names (per app in real URLs): 19 digits from the token."""
    number = int.from_bytes(hashlib.sha256(token.encode()).digest()[:8]) % (9 * 10**18)
    return str(10**18 + number)


@dataclass(slots=True)
class Job:
    id: str
    type: str
    name: str | None
    resumable: bool
    sequence: int
    created_at: datetime
    upload_expires_at: datetime
    download_expires_at: datetime
    upload_url: str
    download_url: str
    submission_path: str  # URL path of the upload object
    delivery_path: str  # URL path of the result object
    directory: Path
    injected_error: str | None = None  # decided at creation: this job will fail
    uploaded_at: datetime | None = None
    ready_at: datetime | None = None
    uploaded_ids: int = 0
    content_error: str | None = None  # the upload was not a valid ID file
    submission: StoredObject | None = None
    submission_file: Path | None = None
    result: StoredObject | None = None
    result_path: Path | None = None
    uploads_in_flight: int = 0
    expired_seen: bool = False
    committing: bool = False  # an upload is being turned into results right now

    @property
    def error(self) -> str | None:
        return self.content_error or self.injected_error

    @property
    def object_name(self) -> str:
        return self.delivery_path.lstrip("/")

    def status(self, now: datetime) -> str:
        if self.uploaded_at is None or self.ready_at is None:
            if self.expired_seen:
                return "expired"
            busy = self.uploads_in_flight > 0 or self.committing
            if now >= self.upload_expires_at and not busy:
                self.expired_seen = True
                return "expired"
            return "created"
        if now < self.ready_at:
            return "in_progress"
        return "failed" if self.error else "complete"

    def is_active(self, now: datetime) -> bool:
        return self.status(now) in ("created", "in_progress")

    def can_commit(self) -> bool:
        """An upload may still start processing (the first one, before the job expired)."""
        return self.uploaded_at is None and not self.expired_seen and not self.committing

    def public(self, now: datetime) -> dict[str, Any]:
        """The job object exactly as the API returns it."""
        status = self.status(now)
        data: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.name is not None:
            data["name"] = self.name
        data.update(
            status=status,
            resumable=self.resumable,
            created_at=format_timestamp(self.created_at),
            upload_url=self.upload_url,
            upload_expires_at=format_timestamp(self.upload_expires_at),
            download_url=self.download_url,
            download_expires_at=format_timestamp(self.download_expires_at),
        )
        if status == "failed":
            data["error"] = self.error
        return data


class JobStore:
    """All jobs of this sandbox, in memory (files live under `data_dir`)."""

    def __init__(
        self, config: SandboxConfig, clock: SandboxClock, signer: Signer, data_dir: Path
    ) -> None:
        self.config = config
        self.clock = clock
        self.signer = signer
        self.data_dir = data_dir
        self.base_url = ""  # set once the server is listening
        self.app_id = app_id_for(config.token)
        self._jobs: dict[str, Job] = {}
        self._order: list[Job] = []
        self._last_id = 0
        self._fail_next: deque[str] = deque()

    # -- queries ----------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        return list(self._order)

    def listing(self, job_type: str, status: str | None) -> list[Job]:
        """Jobs of a type, newest first, optionally filtered by status."""
        now = self.clock.now()
        jobs = [job for job in reversed(self._order) if job.type == job_type]
        if status is not None:
            jobs = [job for job in jobs if job.status(now) == status]
        return jobs

    def blocking_job(self, job_type: str) -> Job | None:
        """The active job that forbids creating another one (one-job rule), if any."""
        now = self.clock.now()
        for job in reversed(self._order):
            if self.config.concurrency == "per-type" and job.type != job_type:
                continue
            if job.is_active(now):
                return job
        return None

    # -- changes ----------------------------------------------------------------------
    def fail_next_jobs(self, count: int, error: str) -> None:
        self._fail_next.extend([error] * count)

    def pending_failures(self) -> int:
        return len(self._fail_next)

    def create(self, job_type: str, name: str | None, resumable: bool) -> Job:
        now = self.clock.now()
        created = now.replace(microsecond=0)  # recorded timestamps are whole seconds
        job_id = self._next_id(now)
        sequence = len(self._order)
        upload_s = whole_seconds(self.config.upload_window_s)
        download_s = whole_seconds(self.config.download_window_s)
        bucket = BUCKETS[job_type]
        object_file = f"{self.app_id}_{job_id}"
        submission = f"/{bucket}/{job_id}/submission/{object_file}"
        delivery = f"/{bucket}/{job_id}/delivery/{object_file}"
        host = self.base_url.split("://", 1)[-1]
        upload_headers: tuple[str, ...]
        if resumable:
            upload_headers = RESUMABLE_HEADERS
            values = {
                "content-length": "0",
                "content-type": "text/plain",
                "host": host,
                "x-goog-resumable": "start",
            }
        else:
            upload_headers = UPLOAD_HEADERS
            values = {"content-type": "text/plain", "host": host}
        job = Job(
            id=job_id,
            type=job_type,
            name=name,
            resumable=resumable,
            sequence=sequence,
            created_at=created,
            upload_expires_at=created + timedelta(seconds=upload_s),
            download_expires_at=created + timedelta(seconds=download_s),
            upload_url=self.signer.sign(
                self.base_url, submission, created, upload_s, upload_headers, values
            ),
            download_url=self.signer.sign(
                self.base_url, delivery, created, download_s, DOWNLOAD_HEADERS, {"host": host}
            ),
            submission_path=submission,
            delivery_path=delivery,
            directory=self.data_dir / job_id,
            injected_error=self._decide_failure(sequence),
        )
        self._jobs[job_id] = job
        self._order.append(job)
        return job

    def _decide_failure(self, sequence: int) -> str | None:
        if self._fail_next:
            return self._fail_next.popleft()
        fraction = self.config.fail_fraction
        if fraction > 0:
            digest = hashlib.blake2b(f"{self.config.seed}:fail:{sequence}".encode()).digest()
            if int.from_bytes(digest[:8]) < fraction * 2**64:
                return self.config.fail_error
        return None

    def _next_id(self, now: datetime) -> str:
        # Snowflake-like: milliseconds since the Twitter epoch << 22, strictly increasing.
        ms = int(now.timestamp() * 1000) - TWEPOCH_MS
        candidate = max(ms << 22, self._last_id + 1)
        self._last_id = candidate
        return str(candidate)

    def commit_upload(
        self,
        job: Job,
        outcome: IngestResult,
        submission_file: Path,
        result_path: Path,
        result: StoredObject,
    ) -> None:
        """The upload finished: processing starts now (the job turns in_progress)."""
        now = self.clock.now()
        job.uploaded_at = now
        job.uploaded_ids = outcome.ids
        job.content_error = outcome.error
        job.submission = outcome.stored
        job.submission_file = submission_file
        job.result = result
        job.result_path = result_path
        processing = (
            self.config.processing_time_s + self.config.processing_time_per_id_s * outcome.ids
        )
        job.ready_at = now + timedelta(seconds=processing)
