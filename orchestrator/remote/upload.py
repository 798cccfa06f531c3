"""Uploads to a signed GCS URL: one plain PUT, or a resumable session that survives restarts.

Files are streamed from disk in IO_CHUNK pieces (reads off the event loop); nothing holds a
whole file in memory. See storage.py for how signed URLs are handled.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import aiohttp
import yarl

from orchestrator.clock import SYSTEM_CLOCK, Clock
from orchestrator.config import is_secure_url
from orchestrator.errors import PermanentError, RemoteError, RetryableError
from orchestrator.redact import redact_url
from orchestrator.remote.storage import (
    IO_CHUNK,
    Progress,
    connection_error,
    file_size,
    log_request,
    raise_storage_error,
    signed,
)

RESUMABLE_QUANTUM = 256 * 1024  # GCS: non-final chunks are multiples of this
# A resumable chunk that the storage acknowledges without taking a byte, this many times in
# a row, is a broken session rather than a slow one.
MAX_STALLED_CHUNKS = 3

_RANGE = re.compile(r"bytes=(\d+)-(\d+)")


Body = Path | Sequence[Path]  # one file, or files sent end to end as one body (a pack)


def _files(body: Body) -> list[Path]:
    return [body] if isinstance(body, Path) else list(body)


def body_size(body: Body) -> int:
    return sum(file_size(path) for path in _files(body))


class _FileSlice:
    """`length` bytes of a body from `start`, as an async iterator aiohttp streams from.

    A body of several files is read as their concatenation (a pack streamed from its members:
    byte for byte the file `build_body` would have written, with no copy on disk), so
    resumable offsets mean the same thing either way.

    The current file is opened here and closed by the caller's `close()`: aiohttp may abandon
    the iterator half-way (error answer, dropped connection), and an abandoned async generator
    would leave its file open until garbage collection. Reads run off the event loop.
    """

    def __init__(
        self, body: Body, start: int, length: int, on_sent: Callable[[int], None] | None
    ) -> None:
        self._pending = _files(body)
        self._name = self._pending[0].name if self._pending else "body"
        self._left = length
        self._on_sent = on_sent
        self._handle: BinaryIO | None = None
        self._closed = False
        self._skip = start
        self._next_file()

    def _next_file(self) -> bool:
        """Open the file holding the next byte to send (False: none left)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        while self._pending:
            path = self._pending.pop(0)
            size = file_size(path)
            if self._skip >= size and self._pending:
                self._skip -= size
                continue
            self._name = path.name
            self._handle = open(path, "rb")  # noqa: SIM115 - closed by close()
            self._handle.seek(self._skip)
            self._skip = 0
            return True
        return False

    def __aiter__(self) -> _FileSlice:
        return self

    async def __anext__(self) -> bytes:
        if self._left <= 0 or self._closed:
            raise StopAsyncIteration
        while True:
            handle = self._handle
            block = (b"" if handle is None or handle.closed else
                     await asyncio.to_thread(handle.read, min(IO_CHUNK, self._left)))
            if block or self._closed or not self._next_file():
                break
        if not block:
            # The file shrank under us; the request fails rather than sending short.
            raise OSError(f"{self._name} ended {self._left} bytes early")
        self._left -= len(block)
        if self._on_sent is not None:
            self._on_sent(len(block))
        return block

    def close(self) -> None:
        # Blocks at most for one in-flight read: BufferedReader.close takes its lock.
        self._closed = True
        if self._handle is not None:
            self._handle.close()


def refuse_insecure(endpoint: str, url: str) -> None:
    """A signed URL over plain http to another machine would hand its signature (and the
    data) to anyone on the path: a PermanentError for this job, and no request is made."""
    if not is_secure_url(url):
        raise PermanentError(
            f"storage {endpoint}: refusing a non-https URL {redact_url(url)} (plain http is "
            "allowed only to 127.0.0.1, ::1 or localhost)",
            endpoint=endpoint,
        )


def _progress_counter(progress: Progress | None, done: int, total: int) -> Callable[[int], None]:
    state = {"done": done}

    def advance(count: int) -> None:
        state["done"] += count
        if progress is not None:
            progress(state["done"], total)

    return advance


async def upload_simple(
    session: aiohttp.ClientSession,
    upload_url: str,
    body: Body,
    *,
    progress: Progress | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> None:
    """PUT the whole body to a signed upload URL (non-resumable job)."""
    refuse_insecure("upload", upload_url)
    size = body_size(body)
    headers = {"Content-Type": "text/plain", "Content-Length": str(size)}
    data = _FileSlice(body, 0, size, _progress_counter(progress, 0, size))
    started = clock.monotonic()
    status: int | None = None
    try:
        async with session.put(
            signed(upload_url), data=data, headers=headers, allow_redirects=False
        ) as resp:
            status = resp.status
            if status not in (200, 201):
                await raise_storage_error("upload", upload_url, resp)
            await resp.read()
    except RemoteError:
        raise
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise connection_error("upload", upload_url, exc) from None
    finally:
        data.close()
        log_request(clock, "upload", "PUT", status, started, bytes=size)


async def start_resumable(
    session: aiohttp.ClientSession, upload_url: str, *, clock: Clock = SYSTEM_CLOCK
) -> str:
    """Open a resumable upload session; returns its URL (a secret: store it, never log it)."""
    refuse_insecure("upload", upload_url)
    headers = {"Content-Type": "text/plain", "Content-Length": "0", "x-goog-resumable": "start"}
    started = clock.monotonic()
    status: int | None = None
    try:
        async with session.post(
            signed(upload_url), data=b"", headers=headers, allow_redirects=False
        ) as resp:
            status = resp.status
            if status not in (200, 201):
                await raise_storage_error("upload", upload_url, resp)
            await resp.read()
            location = resp.headers.get("Location")
    except RemoteError:
        raise
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise connection_error("upload", upload_url, exc) from None
    finally:
        log_request(clock, "upload", "POST", status, started)
    if not location:
        raise RetryableError(
            f"storage upload: HTTP {status} without a session Location for "
            f"{redact_url(upload_url)}",
            http_status=status,
            endpoint="upload",
        )
    # A relative Location is resolved against the signed URL without re-encoding either.
    session_url = str(signed(upload_url).join(yarl.URL(location, encoded=True)))
    refuse_insecure("upload", session_url)
    return session_url


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
    clock: Clock,
) -> int | None:
    """One PUT to the session: the persisted offset after a 308, or None when complete."""
    started = clock.monotonic()
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
            await raise_storage_error("upload", session_url, resp, session=True)
    except RemoteError:
        raise
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise connection_error("upload", session_url, exc) from None
    finally:
        if data is not None:
            data.close()
        log_request(clock, "upload", "PUT", status, started, bytes=sent)


async def upload_resumable(
    session: aiohttp.ClientSession,
    session_url: str,
    body: Body,
    *,
    chunk_bytes: int,
    progress: Progress | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> None:
    """Upload `body` through a resumable session, continuing from what the storage holds.

    Safe to call again after any failure (even in a new process): it first asks the storage
    how much arrived. A dropped connection raises RetryableError, an expired session
    UploadSessionGone, a closed window UploadWindowClosed.
    """
    if chunk_bytes <= 0 or chunk_bytes % RESUMABLE_QUANTUM:
        raise ValueError(f"chunk_bytes must be a positive multiple of {RESUMABLE_QUANTUM}")
    refuse_insecure("upload", session_url)
    total = body_size(body)
    status_query = {"Content-Length": "0", "Content-Range": f"bytes */{total}"}
    offset = await _session_put(session, session_url, status_query, None, 0, clock)
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
            offset = await _session_put(session, session_url, status_query, None, 0, clock)
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
        offset = await _session_put(session, session_url, headers, data, end - offset, clock)
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
