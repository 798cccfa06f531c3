"""Downloads from the signed `download_url`: 404 NoSuchKey until the job is complete, then
the results as `application/octet-stream` with GCS headers and working `Range` requests,
streamed from disk. Faults handled here: `truncate` (cut after N bytes, connection closed)
and `corrupt` (one byte altered, headers and x-goog-hash unchanged).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Literal

from aiohttp import web
from multidict import CIMultiDict

from orchestrator.sandbox import bodies
from orchestrator.sandbox.ingest import StoredObject
from orchestrator.sandbox.jobs import Job
from orchestrator.sandbox.state import STATE, SandboxState
from orchestrator.sandbox.storage import (
    FAULT,
    TRUNCATED,
    check_signed,
    raw_path_and_query,
    xml_response,
)
from orchestrator.sandbox.truth import COMPONENTS

_SEND = 1 << 20  # bytes per download write
_STORED_DAYS = 14  # recorded x-goog-expiration = last-modified + 14 days


def _parse_range(header: str | None, size: int) -> tuple[int, int] | Literal[False] | None:
    """(first, last) for a single satisfiable range; None for "whole object"; False if
    unsatisfiable."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    spec = header[len("bytes=") :].strip()
    first_text, sep, last_text = spec.partition("-")
    if not sep:
        return None
    try:
        if not first_text:
            suffix = int(last_text)
            if suffix <= 0 or size == 0:
                return False
            return max(size - suffix, 0), size - 1
        first = int(first_text)
        last = int(last_text) if last_text else size - 1
    except ValueError:
        return None
    if first >= size or last < first:
        return False
    return first, min(last, size - 1)


async def delivery(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    path, _ = raw_path_and_query(request)
    error = check_signed(request, state, "GET")
    if error is not None:
        return error
    job = state.store.get(request.match_info["job_id"])
    now = state.clock.now()
    if (
        job is None
        or job.delivery_path != path
        or job.status(now) != "complete"
        or job.result is None
        or job.result_path is None
        or job.ready_at is None
    ):
        return xml_response(404, bodies.no_such_key(path.lstrip("/")))
    stored = job.result
    size = stored.size
    wanted = _parse_range(request.headers.get("Range"), size)
    if wanted is False:
        refused = xml_response(
            416,
            bodies.gcs_error(
                "InvalidRange",
                "The requested range cannot be satisfied.",
                request.headers.get("Range", ""),
            ),
        )
        refused.headers["Content-Range"] = f"bytes */{size}"
        return refused
    headers = _delivery_headers(state, job, stored)
    first, last = (0, size - 1) if wanted is None else wanted
    length = max(last - first + 1, 0)
    status = 200
    if wanted is not None:
        status = 206
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    headers["Content-Length"] = str(length)
    response = web.StreamResponse(status=status, headers=headers)
    await response.prepare(request)
    fault = request.get(FAULT)
    send = length
    corrupt_at: int | None = None
    if fault is not None and fault.kind == "truncate":
        send = min(length, fault.after_bytes if fault.after_bytes is not None else length // 2)
    if fault is not None and fault.kind == "corrupt" and length > 0:
        wanted_at = fault.after_bytes if fault.after_bytes is not None else length // 2
        corrupt_at = min(wanted_at, length - 1)
    await _send_file(response, job.result_path, first, send, corrupt_at)
    if send < length:
        request[TRUNCATED] = send
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response


def _delivery_headers(state: SandboxState, job: Job, stored: StoredObject) -> CIMultiDict[str]:
    assert job.ready_at is not None
    headers: CIMultiDict[str] = CIMultiDict()
    headers["Content-Type"] = "application/octet-stream"
    headers["Accept-Ranges"] = "bytes"
    headers["Cache-Control"] = "private, max-age=0"
    headers["Last-Modified"] = format_datetime(job.ready_at, usegmt=True)
    headers["ETag"] = f'"{stored.md5_hex}"'
    headers["x-goog-generation"] = str(int(job.ready_at.timestamp() * 1_000_000))
    headers["x-goog-metageneration"] = "1"
    headers["x-goog-stored-content-encoding"] = "identity"
    headers["x-goog-stored-content-length"] = str(stored.size)
    headers["x-goog-component-count"] = str(COMPONENTS if state.config.shuffle else 1)
    headers["x-goog-expiration"] = format_datetime(
        job.ready_at + timedelta(days=_STORED_DAYS), usegmt=True
    )
    headers.add("x-goog-hash", f"crc32c={stored.crc32c_b64}")
    headers.add("x-goog-hash", f"md5={stored.md5_b64}")
    headers["Server"] = "UploadServer"
    return headers


def _altered(chunk: bytes, at: int | None) -> bytes:
    """`chunk` with the byte at `at` flipped in its lowest bit (a digit stays a digit, so the
    body still parses: only the checksum can tell)."""
    if at is None or not 0 <= at < len(chunk):
        return chunk
    return chunk[:at] + bytes([chunk[at] ^ 1]) + chunk[at + 1 :]


async def _send_file(
    response: web.StreamResponse, path: Path, offset: int, count: int, corrupt_at: int | None
) -> None:
    """Send `count` bytes from `offset`; the byte at `corrupt_at` (relative) altered."""
    if count <= 0:
        return
    handle = await asyncio.to_thread(open, path, "rb")
    try:
        await asyncio.to_thread(handle.seek, offset)
        remaining = count
        while remaining > 0:
            chunk = await asyncio.to_thread(handle.read, min(_SEND, remaining))
            if not chunk:
                break
            sent = count - remaining
            await response.write(_altered(chunk, None if corrupt_at is None
                                          else corrupt_at - sent))
            remaining -= len(chunk)
    finally:
        handle.close()
