"""Resumable upload sessions (GCS XML API protocol) and `Content-Range` parsing."""

from __future__ import annotations

import asyncio
import re
import secrets
from dataclasses import dataclass

from orchestrator.sandbox.ingest import Ingest, IngestResult, StoredObject
from orchestrator.sandbox.jobs import Job

CHUNK_MULTIPLE = 256 * 1024  # non-final chunks must be multiples of 256 KiB
_RANGE = re.compile(r"bytes\s+(?:(\*)|(\d+)-(\d+))/(\*|\d+)")


@dataclass(slots=True)
class ContentRange:
    first: int | None  # None for a status query (`bytes */N`)
    last: int | None
    total: int | None  # None when the client does not know it yet (`/*`)

    @property
    def length(self) -> int:
        if self.first is None or self.last is None:
            return 0
        return self.last - self.first + 1


def parse_content_range(value: str) -> ContentRange | None:
    """`bytes 0-262143/1000000`, `bytes 0-262143/*`, `bytes */1000000` -> ContentRange."""
    match = _RANGE.fullmatch(value.strip())
    if match is None:
        return None
    star, first, last, total = match.groups()
    total_value = None if total == "*" else int(total)
    if star:
        return ContentRange(None, None, total_value)
    first_value, last_value = int(first), int(last)
    if last_value < first_value or (total_value is not None and last_value >= total_value):
        return None
    return ContentRange(first_value, last_value, total_value)


def new_upload_id() -> str:
    # Shaped like the documented example (`ADPycds-_Ow7aqcpbG4XguXSVAgd_...`).
    return "ADPycd" + secrets.token_urlsafe(60)


@dataclass(slots=True)
class Session:
    id: str
    job: Job
    ingest: Ingest
    total: int | None = None
    stored: StoredObject | None = None  # set when complete
    finishing: asyncio.Future[IngestResult] | None = None  # the final step, once started
    cancelled: bool = False
    busy: bool = False  # a chunk is being received (requests are handled one at a time)

    @property
    def persisted(self) -> int:
        """Bytes received so far (the ingest counts what it has taken)."""
        return self.ingest.size

    def range_header(self) -> dict[str, str]:
        """GCS `Range` header for a 308: absent when nothing is persisted yet."""
        if self.persisted == 0:
            return {}
        return {"Range": f"bytes=0-{self.persisted - 1}"}
