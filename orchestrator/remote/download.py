"""Downloads from a signed GCS URL: streamed to disk, resumed by Range, verified whole.

The crc32c in `x-goog-hash` covers the whole object, so a resumed download is checked over
the bytes already on disk plus the new ones. See storage.py for how signed URLs are handled.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import aiohttp
import google_crc32c

from orchestrator.clock import SYSTEM_CLOCK, Clock
from orchestrator.errors import IntegrityError, RemoteError, RetryableError
from orchestrator.redact import redact_url
from orchestrator.remote.storage import (
    IO_CHUNK,
    Progress,
    describe,
    file_size,
    log_request,
    raise_storage_error,
    remove,
    signed,
)
from orchestrator.remote.upload import refuse_insecure


class _Checksum(Protocol):
    """What we use of _Checksum (the library ships no type hints)."""

    def update(self, data: bytes) -> None: ...

    def digest(self) -> bytes: ...


_new_checksum: Callable[[], _Checksum] = google_crc32c.Checksum

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class DownloadReport:
    bytes: int
    crc32c_checked: bool
    resumed_from: int


def _expected_crc32c(resp: aiohttp.ClientResponse) -> str | None:
    """The object's crc32c from `x-goog-hash: crc32c=...` (whole object, also on a 206)."""
    for value in resp.headers.getall("x-goog-hash", []):
        for part in value.split(","):
            name, _, digest = part.strip().partition("=")
            if name.lower() == "crc32c" and digest:
                return digest.strip()
    return None


def _crc32c_b64(checksum: _Checksum) -> str:
    return base64.b64encode(checksum.digest()).decode("ascii")


async def _crc_of_prefix(path: Path, length: int) -> _Checksum:
    """The crc32c of the bytes already on disk, so a resumed download is checked whole."""

    def compute() -> _Checksum:
        checksum = _new_checksum()
        with open(path, "rb") as handle:
            left = length
            while left > 0:
                block = handle.read(min(IO_CHUNK, left))
                if not block:
                    break
                checksum.update(block)
                left -= len(block)
        return checksum

    return await asyncio.to_thread(compute)


def _open_at(path: Path, start: int) -> BinaryIO:
    """`path` for writing from `start` on (what lies beyond is cut). Opened on the loop, so
    a cancellation can never leave an opened file behind in a worker thread."""
    if not start:
        return open(path, "wb")
    handle = open(path, "r+b")  # noqa: SIM115 - the caller closes it
    try:
        handle.seek(start)
        handle.truncate()
    except BaseException:
        handle.close()
        raise
    return handle


def _fsync(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())


async def download(
    session: aiohttp.ClientSession,
    download_url: str,
    dest: Path,
    *,
    progress: Progress | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> DownloadReport:
    """Stream the result object to `dest`, resuming a partial `dest` and verifying it whole.

    Truncated transfer: the partial file stays and RetryableError is raised (the next call
    resumes). Length or crc32c mismatch: `dest` is deleted and IntegrityError is raised.
    """
    refuse_insecure("download", download_url)
    for _ in range(2):
        try:
            return await _download_once(session, download_url, dest, progress, clock)
        except _RestartDownload:
            remove(dest)
    raise RetryableError(
        f"storage download: range resume refused twice for {redact_url(download_url)}",
        endpoint="download",
    )


class _RestartDownload(Exception):
    """The partial file cannot be resumed (416, or a range the server did not honour)."""


async def _download_once(
    session: aiohttp.ClientSession,
    url: str,
    dest: Path,
    progress: Progress | None,
    clock: Clock,
) -> DownloadReport:
    existing = file_size(dest, missing_ok=True)
    # Identity encoding: the crc32c and length describe the stored bytes, not a gzip stream.
    headers = {"Accept-Encoding": "identity"}
    if existing:
        headers["Range"] = f"bytes={existing}-"
    started = clock.monotonic()
    status: int | None = None
    written = 0
    try:
        async with session.get(signed(url), headers=headers, allow_redirects=False) as resp:
            status = resp.status
            if status == 416 and existing:
                raise _RestartDownload
            if status == 200:
                start, total = 0, resp.content_length
            elif status == 206 and existing:
                start, total = _content_range(resp, url)
                if start != existing:
                    raise _RestartDownload
            else:
                await raise_storage_error("download", url, resp)
            expected_crc = _expected_crc32c(resp)
            checksum = await _crc_of_prefix(dest, start) if start else _new_checksum()
            handle = _open_at(dest, start)
            try:
                try:
                    written = await _stream_body(
                        resp, handle, checksum, start, -1 if total is None else total, progress
                    )
                except BaseException:
                    # A broken transfer: the prefix on disk is what the next call resumes.
                    await asyncio.to_thread(_fsync, handle)
                    raise
                # A complete file is not fsynced: it is normalised at once and then deleted
                # (its pages need never reach the disk). Should a crash lose some of it, the
                # next call resumes from what is there and the crc32c, taken over the bytes
                # on disk, tells.
            finally:
                # Synchronous, so that even a repeated cancellation closes the file.
                handle.close()
    except (RemoteError, _RestartDownload):
        raise
    except (aiohttp.ClientError, TimeoutError) as exc:
        # Whatever arrived is on disk and fsynced; the next call resumes after it.
        have = file_size(dest, missing_ok=True)
        raise RetryableError(
            f"storage download: {describe(exc)} after {have} bytes for {redact_url(url)}",
            http_status=status,
            endpoint="download",
        ) from None
    finally:
        log_request(clock, "download", "GET", status, started, bytes=written, resumed_from=existing)

    size = start + written
    if total is not None and size != total:
        if size < total:
            raise RetryableError(
                f"storage download: body ended at {size} of {total} bytes for {redact_url(url)}",
                http_status=status,
                endpoint="download",
            )
        remove(dest)
        raise IntegrityError(
            f"storage download: got {size} bytes, expected {total}, for {redact_url(url)}",
            http_status=status,
            endpoint="download",
        )
    if expected_crc is not None:
        actual = _crc32c_b64(checksum)
        if actual != expected_crc:
            remove(dest)
            raise IntegrityError(
                f"storage download: crc32c mismatch (got {actual}, expected {expected_crc}) "
                f"for {redact_url(url)}",
                http_status=status,
                endpoint="download",
            )
    return DownloadReport(bytes=size, crc32c_checked=expected_crc is not None, resumed_from=start)


def _content_range(resp: aiohttp.ClientResponse, url: str) -> tuple[int, int | None]:
    value = resp.headers.get("Content-Range", "")
    match = _CONTENT_RANGE.fullmatch(value.strip())
    if match is None:
        raise RetryableError(
            f"storage download: 206 with unreadable Content-Range for {redact_url(url)}",
            http_status=206,
            endpoint="download",
        )
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), total


async def _stream_body(
    resp: aiohttp.ClientResponse,
    handle: BinaryIO,
    checksum: _Checksum,
    start: int,
    total: int,
    progress: Progress | None,
) -> int:
    """Append the body to `handle` in large writes; returns the bytes written.

    Bytes are written before any read error propagates, so a dropped connection leaves a
    valid prefix on disk.
    """
    written = 0
    buffer = bytearray()

    async def flush() -> None:
        nonlocal written
        if buffer:
            block = bytes(buffer)
            buffer.clear()
            await asyncio.to_thread(handle.write, block)
            checksum.update(block)
            written += len(block)
            if progress is not None:
                progress(start + written, total)

    try:
        async for piece in resp.content.iter_chunked(IO_CHUNK):
            buffer += piece
            if len(buffer) >= IO_CHUNK:
                await flush()
    finally:
        await flush()
    return written
