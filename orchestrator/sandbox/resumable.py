"""Resumable upload sessions (GCS XML API): chunked `PUT`s with `Content-Range`, `308` with
`Range` while incomplete, `bytes */N` status queries, `200` when complete, `DELETE` -> 499.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from orchestrator.sandbox import bodies
from orchestrator.sandbox.sessions import (
    CHUNK_MULTIPLE,
    ContentRange,
    Session,
    parse_content_range,
)
from orchestrator.sandbox.state import SandboxState
from orchestrator.sandbox.storage import (
    FAULT,
    drain,
    drop,
    finish_and_commit,
    generation,
    pump,
    raw_path_and_query,
    stored_headers,
    xml_response,
)


def _incomplete(session: Session) -> web.Response:
    return web.Response(
        status=308,
        reason="Resume Incomplete",  # GCS's name for it (not a redirect: no Location)
        headers={**session.range_header(), "x-guploader-uploadid": session.id},
    )


async def _finish_session(state: SandboxState, session: Session) -> web.Response:
    if session.finishing is None:
        session.finishing = asyncio.ensure_future(
            finish_and_commit(state, session.job, session.ingest)
        )
    outcome = await asyncio.shield(session.finishing)
    session.stored = outcome.stored
    return web.Response(status=200, headers=stored_headers(outcome.stored, generation(state)))


async def session_request(
    request: web.Request, state: SandboxState, upload_id: str
) -> web.StreamResponse:
    path, _ = raw_path_and_query(request)
    session = state.sessions.get(upload_id)
    if session is None or session.cancelled or session.job.submission_path != path:
        await drain(request)
        return xml_response(
            404, bodies.gcs_error("NoSuchUpload", "The requested upload was not found.")
        )
    if request.method == "DELETE":
        session.cancelled = True
        if session.finishing is None:
            session.ingest.abort()
        return web.Response(status=499, reason="Client Closed Request")
    if request.method != "PUT":
        await drain(request)
        return xml_response(400, bodies.invalid_argument("Use PUT to send data to an upload."))
    if session.busy:
        await drain(request)
        code, message = bodies.STORAGE_FAULTS[503]
        return xml_response(503, bodies.gcs_error(code, message))
    if session.finishing is not None:  # complete (or completing): the object exists
        await drain(request)
        return await _finish_session(state, session)
    header = request.headers.get("Content-Range")
    if header is None:
        # The whole object in one request (size known from Content-Length, or streamed).
        length = request.content_length
        if length is None:
            content_range = ContentRange(0, None, None)
        else:
            content_range = (
                ContentRange(0, length - 1, length) if length else ContentRange(None, None, 0)
            )
    else:
        parsed = parse_content_range(header)
        if parsed is None:
            await drain(request)
            return xml_response(400, bodies.invalid_argument("Invalid Content-Range header."))
        content_range = parsed
    known = content_range.total is not None and session.total is not None
    if known and content_range.total != session.total:
        await drain(request)
        return xml_response(400, bodies.invalid_argument("The object size changed."))
    if content_range.first is None:  # status query: `bytes */N`
        await drain(request)
        if content_range.total is not None and content_range.total == session.persisted:
            return await _finish_session(state, session)
        return _incomplete(session)
    return await _session_chunk(request, state, session, content_range, header is None)


async def _session_chunk(
    request: web.Request,
    state: SandboxState,
    session: Session,
    content_range: ContentRange,
    whole: bool,
) -> web.StreamResponse:
    first = content_range.first or 0
    streamed = whole and content_range.last is None  # chunked body, size unknown
    if not streamed and request.content_length != content_range.length:
        await drain(request)
        return xml_response(
            400, bodies.invalid_argument("Content-Length does not match Content-Range.")
        )
    if first > session.persisted:
        await drain(request)
        return xml_response(
            400,
            bodies.invalid_argument(
                f"Content-Range starts after the persisted data (persisted bytes: "
                f"{session.persisted}); query the upload status first."
            ),
        )
    final = streamed or (
        content_range.total is not None and content_range.last == content_range.total - 1
    )
    if not final and content_range.length % CHUNK_MULTIPLE:
        await drain(request)
        return xml_response(
            400,
            bodies.invalid_argument(
                f"Invalid request. The number of bytes uploaded is required to be a multiple of "
                f"{CHUNK_MULTIPLE}, except for the final request. The received request "
                f"contained {content_range.length} bytes, which does not meet this requirement."
            ),
        )
    fault = request.get(FAULT)
    cut = fault.after_bytes if fault is not None and fault.kind == "reset" else None
    skip = session.persisted - first
    session.busy = True
    session.job.uploads_in_flight += 1
    try:
        await pump(request, session.ingest.feed, skip=skip, limit=cut)
        if cut is not None:
            return drop(request)
        if content_range.total is not None:
            session.total = content_range.total
        if streamed:
            session.total = session.persisted
    finally:
        session.busy = False
        session.job.uploads_in_flight -= 1
    if final:
        return await _finish_session(state, session)
    return _incomplete(session)
