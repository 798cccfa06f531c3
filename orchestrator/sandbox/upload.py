"""Uploads to the signed `upload_url`.

Simple: `PUT upload_url` with `Content-Type: text/plain` -> 200, empty body, GCS headers.
Resumable: `POST upload_url` with `x-goog-resumable: start` -> 201 + `Location` with an
`upload_id`; the session requests are handled in `resumable.py`.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from orchestrator.sandbox import bodies
from orchestrator.sandbox.jobs import Job
from orchestrator.sandbox.resumable import session_request
from orchestrator.sandbox.sessions import Session, new_upload_id
from orchestrator.sandbox.signing import split_query
from orchestrator.sandbox.state import STATE, SandboxState
from orchestrator.sandbox.storage import (
    FAULT,
    check_signed,
    drain,
    drop,
    finish_and_commit,
    generation,
    new_ingest,
    pump,
    raw_path_and_query,
    stored_headers,
    xml_response,
)


async def submission(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    path, query = raw_path_and_query(request)
    upload_id = dict(split_query(query)).get("upload_id")
    job = state.store.get(request.match_info["job_id"])
    if upload_id is not None:
        return await session_request(request, state, upload_id)
    expected = "POST" if job is not None and job.resumable else "PUT"
    error = check_signed(request, state, expected)
    if error is None and (job is None or job.submission_path != path):
        error = xml_response(404, bodies.no_such_key(path.lstrip("/")))
    if error is not None:
        await drain(request)
        return error
    assert job is not None
    if job.resumable:
        return start_session(request, state, job)
    return await _simple_upload(request, state, job)


async def _simple_upload(request: web.Request, state: SandboxState, job: Job) -> web.Response:
    fault = request.get(FAULT)
    cut = fault.after_bytes if fault is not None and fault.kind == "reset" else None
    job.uploads_in_flight += 1
    try:
        ingest = new_ingest(state, job)
        try:
            await pump(request, ingest.feed, limit=cut)
        except BaseException:
            ingest.abort()
            raise
        if cut is not None:
            ingest.abort()
            return drop(request)
        # Once the whole body is here the upload happened, even if the client now leaves.
        outcome = await asyncio.shield(finish_and_commit(state, job, ingest))
    finally:
        job.uploads_in_flight -= 1
    return web.Response(status=200, headers=stored_headers(outcome.stored, generation(state)))


def start_session(request: web.Request, state: SandboxState, job: Job) -> web.Response:
    session = Session(id=new_upload_id(), job=job, ingest=new_ingest(state, job))
    state.sessions[session.id] = session
    return web.Response(
        status=201,
        headers={
            "Location": f"{job.upload_url}&upload_id={session.id}",
            "x-guploader-uploadid": session.id,
            "Content-Type": "text/html; charset=UTF-8",
            "Server": "UploadServer",
        },
    )
