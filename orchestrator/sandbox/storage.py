"""Shared mechanics of the storage side (GCS-style signed URLs): signature checks, GCS
response headers and errors, streaming request bodies into an ingest thread, and turning a
finished upload into the job's result object.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from multidict import CIMultiDict

from orchestrator.sandbox import bodies
from orchestrator.sandbox.faults import Fault
from orchestrator.sandbox.ingest import Ingest, IngestResult, StoredObject
from orchestrator.sandbox.jobs import Job
from orchestrator.sandbox.results import assemble, component_order
from orchestrator.sandbox.sessions import new_upload_id
from orchestrator.sandbox.signing import SERVICE_ACCOUNT
from orchestrator.sandbox.state import SandboxState
from orchestrator.sandbox.truth import COMPONENTS

FAULT: web.RequestKey[Fault] = web.RequestKey("sandbox_fault", Fault)
DROPPED: web.RequestKey[bool] = web.RequestKey("sandbox_dropped", bool)
# Body bytes sent by a response cut short (status and Content-Length went out as promised).
TRUNCATED: web.RequestKey[int] = web.RequestKey("sandbox_truncated", int)
_FEED = 1 << 20  # bytes handed to the ingest thread at once (bounded memory, few hops)


def xml_response(status: int, body: bytes) -> web.Response:
    return web.Response(status=status, body=body, headers={"Content-Type": bodies.XML_CONTENT_TYPE})


def drop(request: web.Request) -> web.Response:
    """Drop the connection without an answer (the `reset` fault)."""
    request[DROPPED] = True
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=499)


async def drain(request: web.Request) -> None:
    """Read and discard the request body, so the client sees our answer."""
    try:
        while await request.content.readany():
            pass
    except (OSError, ValueError, RuntimeError):
        return


def raw_path_and_query(request: web.Request) -> tuple[str, str]:
    path, _, query = request.raw_path.partition("?")
    return path, query


def stored_headers(stored: StoredObject, generation: int) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    headers["Content-Type"] = "text/html; charset=UTF-8"
    headers["ETag"] = f'"{stored.md5_hex}"'
    headers["x-goog-generation"] = str(generation)
    headers["x-goog-metageneration"] = "1"
    headers.add("x-goog-hash", f"crc32c={stored.crc32c_b64}")
    headers.add("x-goog-hash", f"md5={stored.md5_b64}")
    headers["x-goog-stored-content-length"] = str(stored.size)
    headers["x-goog-stored-content-encoding"] = "identity"
    headers["x-guploader-uploadid"] = new_upload_id()
    headers["Server"] = "UploadServer"
    return headers


def forbidden(request: web.Request, state: SandboxState, code: str) -> web.Response:
    """The `403` fault: the XML body GCS sends for a bad signature or a missing permission."""
    path, query = raw_path_and_query(request)
    if code == "AccessDenied":
        permission = "create" if "/submission/" in path else "get"
        return xml_response(403, bodies.access_denied(
            path.lstrip("/"), caller=SERVICE_ACCOUNT, permission=f"storage.objects.{permission}"
        ))
    verdict = state.signer.verify(path, query, request.headers, ignore=("upload_id",))
    return xml_response(403, bodies.signature_mismatch(
        verdict.string_to_sign, f"{request.method}\n{verdict.canonical_request}"
    ))


def generation(state: SandboxState) -> int:
    return int(state.clock.timestamp() * 1_000_000)


def check_signed(
    request: web.Request, state: SandboxState, allowed_method: str
) -> web.Response | None:
    """None when the signed URL is valid for this request, else the GCS error response."""
    path, query = raw_path_and_query(request)
    verdict = state.signer.verify(path, query, request.headers, ignore=("upload_id",))
    if verdict.problem == "missing":
        return xml_response(403, bodies.access_denied(path.lstrip("/")))
    if verdict.problem == "malformed":
        return xml_response(400, bodies.invalid_argument("Malformed signed URL parameters."))
    if verdict.problem == "mismatch" or request.method != allowed_method:
        # The real canonical request starts with the method, so a wrong one fails the same way.
        return xml_response(
            403,
            bodies.signature_mismatch(
                verdict.string_to_sign, f"{request.method}\n{verdict.canonical_request}"
            ),
        )
    assert verdict.expires_at is not None
    if state.clock.now() >= verdict.expires_at:
        return xml_response(400, bodies.expired_token(verdict.expires_at.isoformat()))
    return None


async def feed_thread(feed: Callable[[bytes], None], chunk: bytes) -> None:
    """Hand a chunk to the ingest thread and wait until it is taken, even when cancelled:
    the bytes are then either fully counted or not at all."""
    task = asyncio.ensure_future(asyncio.to_thread(feed, chunk))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


async def pump(
    request: web.Request,
    feed: Callable[[bytes], None],
    *,
    skip: int = 0,
    limit: int | None = None,
) -> int:
    """Stream the body to `feed` (in a thread), ignoring the first `skip` bytes and
    everything from `limit` on. Returns the number of body bytes read."""
    buffer = bytearray()
    position = 0
    while True:
        if limit is not None and position >= limit:
            break
        data = await request.content.readany()
        if not data:
            break
        start, position = position, position + len(data)
        low = max(skip - start, 0)
        high = len(data) if limit is None else min(len(data), limit - start)
        if low < high:
            buffer += data[low:high]
        if len(buffer) >= _FEED:
            chunk = bytes(buffer)
            buffer.clear()
            await feed_thread(feed, chunk)
    if buffer:
        await feed_thread(feed, bytes(buffer))
    return position


def new_ingest(state: SandboxState, job: Job) -> Ingest:
    return Ingest(
        job.directory,
        state.truth(job.type),
        shuffle=state.config.shuffle,
        name=f"upload-{secrets.token_hex(6)}",
    )


async def commit(state: SandboxState, job: Job, ingest: Ingest, outcome: IngestResult) -> None:
    """First complete upload before expiry starts processing; later ones are just stored."""
    parts = [ingest.component_path(index) for index in range(COMPONENTS)]
    if not job.can_commit():  # GCS keeps the object; X processes only the first upload
        await asyncio.to_thread(remove_files, [*parts, ingest.path])
        return
    job.committing = True
    try:
        result_path = job.directory / f"{ingest.path.stem}.results"
        if outcome.error is None:
            order = component_order(state.config.seed, job.id, state.config.shuffle)
            result = await asyncio.to_thread(
                assemble, parts, order, result_path, state.config.blank_lines
            )
        else:
            await asyncio.to_thread(remove_files, parts)
            result = StoredObject(0, "", "", "")
        state.store.commit_upload(job, outcome, ingest.path, result_path, result)
    finally:
        job.committing = False


def remove_files(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


async def finish_and_commit(state: SandboxState, job: Job, ingest: Ingest) -> IngestResult:
    job.uploads_in_flight += 1  # own count: this may outlive the request that started it
    try:
        outcome = await asyncio.to_thread(ingest.finish)
        await commit(state, job, ingest, outcome)
        return outcome
    finally:
        job.uploads_in_flight -= 1
