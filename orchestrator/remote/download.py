"""Downloads from a signed GCS URL: streamed to disk, resumed by Range, verified whole.

The crc32c in `x-goog-hash` covers the whole object, so a resumed download is checked over
the bytes already on disk plus the new ones. See storage.py for how signed URLs are handled.

The body is handed to a worker thread in batches while the next batch arrives; each piece is
written to the file (what a resume starts from), run through crc32c and given to an optional
sink (the results normaliser) in the same pass, so nothing reads the file again.
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

BATCH_BYTES = 4 << 20  # the disk side's unit of work (a worker-thread hand-off)

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


class BodySink(Protocol):
    """Takes the result body's bytes as they are written (e.g. files.results.ResultStream,
    which normalises them in the same pass). Called from a worker thread, one call at a time,
    in order: `begin()` at every attempt (what was fed before is to be discarded), then every
    byte from the object's first on (a resumed download feeds the prefix on disk first)."""

    def begin(self) -> None: ...

    def feed(self, block: bytes) -> None: ...


class BodyWriter:
    """The disk side of a download, in a worker thread: blocks appended to the file, the
    crc32c updated, and the sink fed, in one pass over each block as it arrives."""

    def __init__(self, handle: BinaryIO, checksum: _Checksum, sink: BodySink | None) -> None:
        self.handle = handle
        self.checksum = checksum
        self.sink = sink

    def absorb(self, pieces: list[bytes]) -> int:
        """Write `pieces` in order; returns their bytes. A piece is on disk before the sink
        sees it (a sink that raises leaves no hole in the file)."""
        handle, checksum, sink = self.handle, self.checksum, self.sink
        size = 0
        for piece in pieces:
            handle.write(piece)
            checksum.update(piece)
            if sink is not None:
                sink.feed(piece)
            size += len(piece)
        return size


def _begin(path: Path, length: int, sink: BodySink | None) -> _Checksum:
    """The crc32c of the bytes already on disk (so a resumed download is checked whole),
    with the sink started over and fed those bytes first."""
    checksum = _new_checksum()
    if sink is not None:
        sink.begin()
    if not length:
        return checksum
    with open(path, "rb", buffering=0) as handle:
        left = length
        while left > 0:
            block = handle.read(min(IO_CHUNK, left))
            if not block:
                break
            checksum.update(block)
            if sink is not None:
                sink.feed(block)
            left -= len(block)
    return checksum


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
    sink: BodySink | None = None,
) -> DownloadReport:
    """Stream the result object to `dest`, resuming a partial `dest` and verifying it whole.

    Truncated transfer: the partial file stays and RetryableError is raised (the next call
    resumes). Length or crc32c mismatch: `dest` is deleted and IntegrityError is raised.
    `sink`: fed the whole object (prefix on disk included) in the same pass; whatever it
    made is only to be used once this returns (the crc32c checked); an error it raises
    (IntegrityError for a corrupt line) ends the download and propagates.
    """
    refuse_insecure("download", download_url)
    for _ in range(2):
        try:
            return await _download_once(session, download_url, dest, progress, clock, sink)
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
    sink: BodySink | None,
) -> DownloadReport:
    existing = file_size(dest, missing_ok=True)
    # Identity encoding: the crc32c and length describe the stored bytes, not a gzip stream.
    headers = {"Accept-Encoding": "identity"}
    if existing:
        headers["Range"] = f"bytes={existing}-"
    started = clock.monotonic()
    status: int | None = None
    written = 0
    # Before the request, so that nothing stands between the answer's head and reading its
    # body (aiohttp drops what it buffered when the connection breaks meanwhile).
    checksum = await asyncio.to_thread(_begin, dest, existing, sink)
    try:
        async with session.get(signed(url), headers=headers, allow_redirects=False) as resp:
            status = resp.status
            if status == 416 and existing:
                raise _RestartDownload
            if status == 200:
                start, total = 0, resp.content_length
                if existing:  # the whole object after all: the prefix read does not count
                    checksum = await asyncio.to_thread(_begin, dest, 0, sink)
            elif status == 206 and existing:
                start, total = _content_range(resp, url)
                if start != existing:
                    raise _RestartDownload
            else:
                await raise_storage_error("download", url, resp)
            expected_crc = _expected_crc32c(resp)
            handle = _open_at(dest, start)
            try:
                try:
                    writer = BodyWriter(handle, checksum, sink)
                    written = await _stream_body(
                        resp, writer, start, -1 if total is None else total, progress
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
    writer: BodyWriter,
    start: int,
    total: int,
    progress: Progress | None,
) -> int:
    """Hand the body to `writer` in batches of about BATCH_BYTES; returns the bytes written.

    One batch is written (in a worker thread) while the next one arrives: the disk work and
    the socket overlap, with at most two batches (plus the socket's buffer) in memory. The
    bytes received are written before any read error propagates, so a dropped connection
    leaves a valid prefix on disk.
    """
    written = 0
    pending: asyncio.Future[int] | None = None

    async def settle() -> None:
        nonlocal written, pending
        if pending is not None:
            job, pending = pending, None
            written += await _finished(job)
            if progress is not None:
                progress(start + written, total)

    pieces: list[bytes] = []
    size = 0
    try:
        async for piece in resp.content.iter_any():
            pieces.append(piece)
            size += len(piece)
            if size >= BATCH_BYTES:
                await settle()
                pending = asyncio.ensure_future(asyncio.to_thread(writer.absorb, pieces))
                pieces, size = [], 0
    finally:
        await settle()
        if pieces:
            pending = asyncio.ensure_future(asyncio.to_thread(writer.absorb, pieces))
            await settle()
    return written


async def _finished(job: asyncio.Future[int]) -> int:
    """The result of a worker thread's batch, waited for even through a cancellation (the
    thread cannot be stopped: the file must not be closed under it); the cancellation is
    raised once it is done."""
    cancelled = False
    while not job.done():
        try:
            await asyncio.wait([job])
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        job.exception()  # retrieved: a failure of the batch is dropped with the cancellation
        raise asyncio.CancelledError
    return job.result()
