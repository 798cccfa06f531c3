"""What upload and download share: signed GCS URLs, their error answers, request logs.

These URLs carry their own credential in the query string, so no Authorization header is ever
sent to them, the URL is passed on byte-for-byte (aiohttp re-encodes URLs unless told not to,
and the signature then no longer matches), and only `redact_url(url)` may appear in messages.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any, NoReturn

import aiohttp
import structlog
import yarl

from orchestrator.clock import Clock
from orchestrator.errors import (
    DownloadExpired,
    PermanentError,
    RateLimited,
    RemoteError,
    RetryableError,
    UploadSessionGone,
    UploadWindowClosed,
)
from orchestrator.redact import redact_text, redact_url
from orchestrator.remote.http import read_limited

log = structlog.get_logger(__name__)

Progress = Callable[[int, int], None]  # (bytes done, total bytes; -1 when unknown)
# Told of every HTTP request to storage as it ends: (endpoint, HTTP status or None when no
# answer came). Set by the caller around a transfer (daemon metrics); every request of
# upload.py and download.py goes through log_request, so one resumable upload's many chunk
# PUTs each count.
REQUEST_OBSERVER: ContextVar[Callable[[str, int | None], None] | None] = ContextVar(
    "storage_request_observer", default=None)

IO_CHUNK = 1024 * 1024  # disk reads and writes, and socket writes
STORAGE_RATE_LIMIT_WAIT_S = 30.0

_XML_CODE = re.compile(rb"<Code>\s*([A-Za-z0-9_.-]{1,100})\s*</Code>")
_XML_MESSAGE = re.compile(rb"<Message>([^<]{0,500})</Message>")


def signed(url: str) -> yarl.URL:
    """The signed URL exactly as received; re-encoding it breaks the signature (GCS 403)."""
    return yarl.URL(url, encoded=True)


# Metadata calls: quick enough to make on the loop, unlike reads and writes of data.
def file_size(path: Path, *, missing_ok: bool = False) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        if missing_ok:
            return 0
        raise


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)


# -- errors -----------------------------------------------------------------------------


def describe(exc: BaseException) -> str:
    text = redact_text(str(exc)).strip()
    name = type(exc).__name__
    return f"{name} ({text})" if text else name


def connection_error(endpoint: str, url: str, exc: BaseException) -> RetryableError:
    return RetryableError(
        f"storage {endpoint}: {describe(exc)} for {redact_url(url)}", endpoint=endpoint
    )


async def raise_storage_error(
    endpoint: str, url: str, resp: aiohttp.ClientResponse, *, session: bool = False
) -> NoReturn:
    """Classify a GCS error answer (XML body with a <Code>) into a domain error: ExpiredToken
    closes the window (permanent), 408/409/429/5xx and a download's 404 are transient, other
    answers (403 SignatureDoesNotMatch / AccessDenied, 400) permanent.

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
    problem: dict[str, Any] | None = {"code": code, "message": detail} if code or detail else None
    status = resp.status
    text = f"storage {endpoint}: HTTP {status}" + (f" {code}" if code else "")
    text += f" for {redact_url(url)}"

    def error(
        kind: type[RemoteError], message: str = text, retry_after: float | None = None
    ) -> RemoteError:
        return kind(message, http_status=status, problem=problem, retry_after=retry_after,
                    endpoint=endpoint)

    if code == "ExpiredToken":
        if endpoint == "download":
            raise error(DownloadExpired)
        raise error(UploadWindowClosed)
    if status == 429:
        retry_after = resp.headers.get("Retry-After", "")
        wait = float(retry_after) if retry_after.isdigit() else STORAGE_RATE_LIMIT_WAIT_S
        raise error(RateLimited, retry_after=wait)
    if status >= 500 or status in (408, 409):
        # Transient: the storage is failing, timed out, or a concurrent write conflicted.
        raise error(RetryableError)
    if endpoint == "download" and (status == 404 or code == "NoSuchKey"):
        raise error(RetryableError, text + " (results not there yet)")
    if session and status in (404, 410):
        raise error(UploadSessionGone)
    raise error(PermanentError)


def log_request(
    clock: Clock, endpoint: str, method: str, status: int | None, started: float,
    **extra: object,
) -> None:
    observer = REQUEST_OBSERVER.get()
    if observer is not None:
        observer(endpoint, status)
    log.debug(
        "storage.request",
        endpoint=endpoint,
        method=method,
        http_status=status,
        duration_ms=round((clock.monotonic() - started) * 1000, 1),
        **extra,
    )
