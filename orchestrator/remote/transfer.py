"""Storage side of a compliance job: the signed GCS URLs for upload and download.

These URLs carry their own credential in the query string, so no Authorization header is ever
sent here, the URL is passed on byte-for-byte (aiohttp re-encodes URLs unless told not to, and
the signature then no longer matches), and only `redact_url(url)` may appear in messages.
Files are streamed from and to disk; nothing holds a whole file in memory.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NoReturn

import aiohttp
import google_crc32c
import structlog
import yarl

from orchestrator.errors import (
    DownloadExpired,
    IntegrityError,
    PermanentError,
    RateLimited,
    RemoteError,
    RetryableError,
    UploadWindowClosed,
)
from orchestrator.redact import redact_text, redact_url
from orchestrator.remote.xapi import read_limited

log = structlog.get_logger(__name__)

Progress = Callable[[int, int], None]  # (bytes done, total bytes; -1 when unknown)

RESUMABLE_QUANTUM = 256 * 1024  # GCS: non-final chunks are multiples of this
IO_CHUNK = 1024 * 1024  # disk reads and writes, and socket writes
STORAGE_RATE_LIMIT_WAIT_S = 30.0
# A resumable chunk that the storage acknowledges without taking a byte, this many times in
# a row, is a broken session rather than a slow one.
MAX_STALLED_CHUNKS = 3

_XML_CODE = re.compile(rb"<Code>\s*([A-Za-z0-9_.-]{1,100})\s*</Code>")
_XML_MESSAGE = re.compile(rb"<Message>([^<]{0,500})</Message>")
_RANGE = re.compile(r"bytes=(\d+)-(\d+)")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class UploadSessionGone(PermanentError):
    """The resumable upload session no longer exists (404/410); start a new session."""


def signed(url: str) -> yarl.URL:
    """The signed URL exactly as received; re-encoding it breaks the signature (GCS 403)."""
    return yarl.URL(url, encoded=True)


@dataclass(frozen=True)
class DownloadReport:
    bytes: int
    crc32c_checked: bool
    resumed_from: int


# Metadata calls: quick enough to make on the loop, unlike reads and writes of data.
def _size(path: Path, *, missing_ok: bool = False) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        if missing_ok:
            return 0
        raise


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


# -- errors -----------------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    text = redact_text(str(exc)).strip()
    name = type(exc).__name__
    return f"{name} ({text})" if text else name


def _connection_error(endpoint: str, url: str, exc: BaseException) -> RetryableError:
    return RetryableError(
        f"storage {endpoint}: {_describe(exc)} for {redact_url(url)}", endpoint=endpoint
    )


async def _raise_storage_error(
    endpoint: str, url: str, resp: aiohttp.ClientResponse, *, session: bool = False
) -> NoReturn:
    """Classify a GCS error answer (XML body with a <Code>) into a domain error.

    `session`: the request went to a resumable session URL, where 404/410 mean the session
    itself is gone (expired or cancelled), not the object.
    """
    try:
        body = await read_limited(resp)
    except (aiohttp.ClientError, TimeoutError):
        body = b""
    code_match = _XML_CODE.search(body)
    code = code_match.group(1).decode("ascii") if code_match else None
    message_match = _XML_MESSAGE.search(body)
    detail = (
        redact_text(message_match.group(1).decode("utf-8", "replace")) if message_match else None
    )
    problem = {"code": code, "message": detail} if code or detail else None
    status = resp.status
    text = f"storage {endpoint}: HTTP {status}" + (f" {code}" if code else "")
    text += f" for {redact_url(url)}"
    common = {"http_status": status, "problem": problem, "endpoint": endpoint}
    if code == "ExpiredToken":
        if endpoint == "download":
            raise DownloadExpired(text, **common)
        raise UploadWindowClosed(text, **common)
    if status == 429:
        retry_after = resp.headers.get("Retry-After", "")
        wait = float(retry_after) if retry_after.isdigit() else STORAGE_RATE_LIMIT_WAIT_S
        raise RateLimited(text, retry_after=wait, **common)
    if status >= 500 or status == 408:
        raise RetryableError(text, **common)
    if endpoint == "download" and (status == 404 or code == "NoSuchKey"):
        raise RetryableError(text + " (results not there yet)", **common)
    if session and status in (404, 410):
        raise UploadSessionGone(text, **common)
    raise PermanentError(text, **common)


def _log_request(
    endpoint: str, method: str, status: int | None, started: float, **extra: object
) -> None:
    log.debug(
        "storage.request",
        endpoint=endpoint,
        method=method,
        http_status=status,
        duration_ms=round((time.monotonic() - started) * 1000, 1),
        **extra,
    )


# -- upload -----------------------------------------------------------------------------


class _FileSlice:
    """`length` bytes of a file from `start`, as an async iterator aiohttp streams from.

    The file is opened here and closed by the caller's `close()`: aiohttp may abandon the
    iterator half-way (error answer, dropped connection), and an abandoned async generator
    would leave its file open until garbage collection. Reads run off the event loop.
    """

    def __init__(
        self, path: Path, start: int, length: int, on_sent: Callable[[int], None] | None
    ) -> None:
        self._name = path.name
        self._left = length
        self._on_sent = on_sent
        self._handle = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._handle.seek(start)

    def __aiter__(self) -> _FileSlice:
        return self

    async def __anext__(self) -> bytes:
        if self._left <= 0 or self._handle.closed:
            raise StopAsyncIteration
        block = await asyncio.to_thread(self._handle.read, min(IO_CHUNK, self._left))
        if not block:
            # The file shrank under us; the request fails rather than sending short.
            raise OSError(f"{self._name} ended {self._left} bytes early")
        self._left -= len(block)
        if self._on_sent is not None:
            self._on_sent(len(block))
        return block

    def close(self) -> None:
        # Blocks at most for one in-flight read: BufferedReader.close takes its lock.
        self._handle.close()


def _progress_counter(progress: Progress | None, done: int, total: int) -> Callable[[int], None]:
    state = {"done": done}

    def advance(count: int) -> None:
        state["done"] += count
        if progress is not None:
            progress(state["done"], total)

    return advance


async def upload_simple(
    session: aiohttp.ClientSession, upload_url: str, body: Path, *, progress: Progress | None = None
) -> None:
    """PUT the whole file to a signed upload URL (non-resumable job)."""
    size = _size(body)
    headers = {"Content-Type": "text/plain", "Content-Length": str(size)}
    data = _FileSlice(body, 0, size, _progress_counter(progress, 0, size))
    started = time.monotonic()
    status: int | None = None
    try:
        async with session.put(
            signed(upload_url), data=data, headers=headers, allow_redirects=False
        ) as resp:
            status = resp.status
            if status not in (200, 201):
                await _raise_storage_error("upload", upload_url, resp)
            await resp.read()
    except RemoteError:
        raise
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise _connection_error("upload", upload_url, exc) from None
    finally:
        data.close()
        _log_request("upload", "PUT", status, started, bytes=size)


async def start_resumable(session: aiohttp.ClientSession, upload_url: str) -> str:
    """Open a resumable upload session; returns its URL (a secret: store it, never log it)."""
    headers = {"Content-Type": "text/plain", "Content-Length": "0", "x-goog-resumable": "start"}
    started = time.monotonic()
    status: int | None = None
    try:
        async with session.post(
            signed(upload_url), data=b"", headers=headers, allow_redirects=False
        ) as resp:
            status = resp.status
            if status not in (200, 201):
                await _raise_storage_error("upload", upload_url, resp)
            await resp.read()
            location = resp.headers.get("Location")
    except RemoteError:
        raise
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _connection_error("upload", upload_url, exc) from None
    finally:
        _log_request("upload", "POST", status, started)
    if not location:
        raise RetryableError(
            f"storage upload: HTTP {status} without a session Location for "
            f"{redact_url(upload_url)}",
            http_status=status,
            endpoint="upload",
        )
    # A relative Location is resolved against the signed URL without re-encoding either.
    return str(signed(upload_url).join(yarl.URL(location, encoded=True)))


def _persisted_offset(resp: aiohttp.ClientResponse) -> int:
    """Bytes the storage holds, from a 308's `Range: bytes=0-N` (absent: nothing yet)."""
    value = resp.headers.get("Range")
    if value is None:
        return 0
    match = _RANGE.fullmatch(value.strip())
    if match is None or int(match.group(1)) != 0:
        raise RetryableError(
            f"storage upload: unreadable Range answer {value[:60]!r}",
            http_status=308,
            endpoint="upload",
        )
    return int(match.group(2)) + 1


async def _session_put(
    session: aiohttp.ClientSession,
    session_url: str,
    headers: dict[str, str],
    data: _FileSlice | None,
    sent: int,
) -> int | None:
    """One PUT to the session: the persisted offset after a 308, or None when complete."""
    started = time.monotonic()
    status: int | None = None
    try:
        async with session.put(
            signed(session_url), data=data, headers=headers, allow_redirects=False
        ) as resp:
            status = resp.status
            if status in (200, 201):
                await resp.read()
                return None
            if status == 308:
                await resp.read()
                return _persisted_offset(resp)
            await _raise_storage_error("upload", session_url, resp, session=True)
    except RemoteError:
        raise
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise _connection_error("upload", session_url, exc) from None
    finally:
        if data is not None:
            data.close()
        _log_request("upload", "PUT", status, started, bytes=sent)


async def upload_resumable(
    session: aiohttp.ClientSession,
    session_url: str,
    body: Path,
    *,
    chunk_bytes: int,
    progress: Progress | None = None,
) -> None:
    """Upload `body` through a resumable session, continuing from what the storage holds.

    Safe to call again after any failure (even in a new process): it first asks the storage
    how much arrived. A dropped connection raises RetryableError, an expired session
    UploadSessionGone, a closed window UploadWindowClosed.
    """
    if chunk_bytes <= 0 or chunk_bytes % RESUMABLE_QUANTUM:
        raise ValueError(f"chunk_bytes must be a positive multiple of {RESUMABLE_QUANTUM}")
    total = _size(body)
    status_query = {"Content-Length": "0", "Content-Range": f"bytes */{total}"}
    offset = await _session_put(session, session_url, status_query, None, 0)
    stalled = 0
    while offset is not None:
        if progress is not None:
            progress(offset, total)
        if offset > total:
            raise PermanentError(
                f"storage upload: session holds {offset} bytes of a {total}-byte file for "
                f"{redact_url(session_url)}",
                endpoint="upload",
            )
        if offset == total:
            # Everything arrived but the storage still waits: finalise with an empty PUT.
            offset = await _session_put(session, session_url, status_query, None, 0)
            if offset is not None:
                raise RetryableError(
                    f"storage upload: complete upload not finalised for {redact_url(session_url)}",
                    http_status=308,
                    endpoint="upload",
                )
            break
        end = min(offset + chunk_bytes, total)
        headers = {
            # Harmless on a session URL, and what the signed initiation declared.
            "Content-Type": "text/plain",
            "Content-Length": str(end - offset),
            "Content-Range": f"bytes {offset}-{end - 1}/{total}",
        }
        data = _FileSlice(body, offset, end - offset, _progress_counter(progress, offset, total))
        previous = offset
        offset = await _session_put(session, session_url, headers, data, end - offset)
        if offset is not None and offset <= previous:
            stalled += 1
            if stalled >= MAX_STALLED_CHUNKS:
                raise RetryableError(
                    f"storage upload: no progress after {stalled} chunks for "
                    f"{redact_url(session_url)}",
                    http_status=308,
                    endpoint="upload",
                )
        else:
            stalled = 0
    if progress is not None:
        progress(total, total)


# -- download ---------------------------------------------------------------------------


def _expected_crc32c(resp: aiohttp.ClientResponse) -> str | None:
    """The object's crc32c from `x-goog-hash: crc32c=...` (whole object, also on a 206)."""
    for value in resp.headers.getall("x-goog-hash", []):
        for part in value.split(","):
            name, _, digest = part.strip().partition("=")
            if name.lower() == "crc32c" and digest:
                return digest.strip()
    return None


def _crc32c_b64(checksum: google_crc32c.Checksum) -> str:
    return base64.b64encode(checksum.digest()).decode("ascii")


async def _crc_of_prefix(path: Path, length: int) -> google_crc32c.Checksum:
    """The crc32c of the bytes already on disk, so a resumed download is checked whole."""

    def compute() -> google_crc32c.Checksum:
        checksum = google_crc32c.Checksum()
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
) -> DownloadReport:
    """Stream the result object to `dest`, resuming a partial `dest` and verifying it whole.

    Truncated transfer: the partial file stays and RetryableError is raised (the next call
    resumes). Length or crc32c mismatch: `dest` is deleted and IntegrityError is raised.
    """
    for _ in range(2):
        try:
            return await _download_once(session, download_url, dest, progress)
        except _RestartDownload:
            _remove(dest)
    raise RetryableError(
        f"storage download: range resume refused twice for {redact_url(download_url)}",
        endpoint="download",
    )


class _RestartDownload(Exception):
    """The partial file cannot be resumed (416, or a range the server did not honour)."""


async def _download_once(
    session: aiohttp.ClientSession, url: str, dest: Path, progress: Progress | None
) -> DownloadReport:
    existing = _size(dest, missing_ok=True)
    # Identity encoding: the crc32c and length describe the stored bytes, not a gzip stream.
    headers = {"Accept-Encoding": "identity"}
    if existing:
        headers["Range"] = f"bytes={existing}-"
    started = time.monotonic()
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
                await _raise_storage_error("download", url, resp)
            expected_crc = _expected_crc32c(resp)
            checksum = await _crc_of_prefix(dest, start) if start else google_crc32c.Checksum()
            handle = _open_at(dest, start)
            try:
                try:
                    written = await _stream_body(
                        resp, handle, checksum, start, -1 if total is None else total, progress
                    )
                finally:
                    # Also after a broken transfer: the prefix on disk is what resumes.
                    await asyncio.to_thread(_fsync, handle)
            finally:
                # Synchronous, so that even a repeated cancellation closes the file.
                handle.close()
    except (RemoteError, _RestartDownload):
        raise
    except (aiohttp.ClientError, TimeoutError) as exc:
        # Whatever arrived is on disk and fsynced; the next call resumes after it.
        have = _size(dest, missing_ok=True)
        raise RetryableError(
            f"storage download: {_describe(exc)} after {have} bytes for {redact_url(url)}",
            http_status=status,
            endpoint="download",
        ) from None
    finally:
        _log_request("download", "GET", status, started, bytes=written, resumed_from=existing)

    size = start + written
    if total is not None and size != total:
        if size < total:
            raise RetryableError(
                f"storage download: body ended at {size} of {total} bytes for {redact_url(url)}",
                http_status=status,
                endpoint="download",
            )
        _remove(dest)
        raise IntegrityError(
            f"storage download: got {size} bytes, expected {total}, for {redact_url(url)}",
            http_status=status,
            endpoint="download",
        )
    if expected_crc is not None:
        actual = _crc32c_b64(checksum)
        if actual != expected_crc:
            _remove(dest)
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
    checksum: google_crc32c.Checksum,
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
