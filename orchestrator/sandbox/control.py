"""`/_sandbox/...`: the test controls over HTTP, for a sandbox in another process.

GET  /_sandbox                      settings, clock, pending faults
GET  /_sandbox/health               {"ok": true}
GET|POST /_sandbox/clock            {"advance": seconds} | {"freeze": true|false} -> {"now": ...}
GET|POST|DELETE /_sandbox/faults    {"endpoint","kind","count","delay","after_bytes","retry_after",
                                    "code"}
                                    or {"spec": "upload:500:3"}
                                    or {"outage_s": 86400, "kinds": ["503", "reset"],
                                        "endpoint": "*", "starts_with": "upload"};
                                    DELETE clears
POST /_sandbox/fail_next_jobs       {"count": N, "error": "..."}
GET|POST /_sandbox/config           tunable settings (windows, processing time, rate limit, ...)
GET  /_sandbox/jobs                 every job: public object + uploaded_ids + name
GET  /_sandbox/jobs/{id}/expected   the job's expected result rows (NDJSON, input order)
POST /_sandbox/expected             {"type": "tweets", "ids": [...]} -> {"results": {id: row}}
GET  /_sandbox/requests             the request log: [[method, path, status], ...]
                                    (+ {"truncated": true, "sent": N} on a cut response)
POST /_sandbox/rate_limits/reset    start fresh rate-limit windows
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiohttp import web

from orchestrator.core.model import format_timestamp
from orchestrator.sandbox.faults import parse_fault_spec
from orchestrator.sandbox.state import STATE, SandboxState
from orchestrator.sandbox.truth import JOB_TYPES, Truth


def job_record(state: SandboxState, job_id: str) -> dict[str, Any] | None:
    job = state.store.get(job_id)
    if job is None:
        return None
    record = job.public(state.clock.now())
    record["name"] = job.name
    record["uploaded_ids"] = job.uploaded_ids
    if job.error is not None:
        record["sandbox_error"] = job.error  # what the job will fail with, before it does
    return record


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda value: json.dumps(value))


def _bad(message: str) -> web.Response:
    return _json({"error": message}, 400)


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data


async def info(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return _json(
        {
            "config": state.config.public(),
            "now": format_timestamp(state.clock.now()),
            "frozen": state.clock.frozen,
            "faults": state.faults.pending(),
            "pending_job_failures": state.store.pending_failures(),
        }
    )


async def health(request: web.Request) -> web.Response:
    return _json({"ok": True})


async def clock(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if request.method == "POST":
        try:
            body = await _body(request)
            if "advance" in body:
                state.clock.advance(float(body["advance"]))
            if body.get("freeze") is True:
                state.clock.freeze()
            elif body.get("freeze") is False:
                state.clock.unfreeze()
        except (ValueError, TypeError) as exc:
            return _bad(str(exc))
    return _json({"now": format_timestamp(state.clock.now()), "frozen": state.clock.frozen})


async def faults(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if request.method == "DELETE":
        state.faults.clear()
    elif request.method == "POST":
        try:
            body = await _body(request)
            items = body.get("faults", [body])
            for item in items:
                if "outage_s" in item:
                    state.faults.outage(
                        float(item["outage_s"]), item.get("kinds", ("503", "reset")),
                        endpoint=str(item.get("endpoint", "*")),
                        starts_with=item.get("starts_with"),
                    )
                    continue
                options = parse_fault_spec(item["spec"]) if "spec" in item else dict(item)
                state.faults.add(**options)
        except (ValueError, TypeError, KeyError) as exc:
            return _bad(str(exc))
    return _json({"faults": state.faults.pending()})


async def fail_next_jobs(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        body = await _body(request)
        count = int(body.get("count", 1))
        error = str(body.get("error", state.config.fail_error))
        state.faults.fail_next_jobs(count, error)
    except (ValueError, TypeError) as exc:
        return _bad(str(exc))
    return _json({"pending_job_failures": state.store.pending_failures()})


async def config(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if request.method == "POST":
        try:
            state.config.update(await _body(request))
        except (ValueError, TypeError) as exc:
            return _bad(str(exc))
    return _json({"config": state.config.public()})


async def jobs(request: web.Request) -> web.Response:
    state = request.app[STATE]
    records = [job_record(state, job.id) for job in state.store.all()]
    return _json({"jobs": records})


async def job_expected(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    job = state.store.get(request.match_info["id"])
    if job is None or job.submission_file is None:
        return _json({"error": "no such job, or nothing uploaded"}, 404)
    blocks = expected_blocks(state.truth(job.type), job.submission_file)
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    while (block := await asyncio.to_thread(next, blocks, None)) is not None:
        await response.write(block)
    await response.write_eof()
    return response


def expected_blocks(truth: Truth, path: Path) -> Iterator[bytes]:
    """The expected rows for an uploaded file, in input order, in blocks (streaming)."""
    with open(path, "rb") as handle:
        out: list[bytes] = []
        size = 0
        for raw in handle:
            ident = raw.strip()
            if ident and ident.isdigit() and len(ident) <= 19 and truth.is_affected(ident):
                for row in truth.rows(ident):
                    line = json.dumps(row, separators=(",", ":")).encode() + b"\n"
                    out.append(line)
                    size += len(line)
                if size >= 1 << 20:
                    yield b"".join(out)
                    out, size = [], 0
        if out:
            yield b"".join(out)


async def expected(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        body = await _body(request)
        job_type = body["type"]
        if job_type not in JOB_TYPES:
            raise ValueError(f"type must be one of {JOB_TYPES}")
        ids = [str(item) for item in body["ids"]]
        truth = state.truth(job_type)
        results = {}
        for ident in ids:
            raw = ident.strip().encode()
            if not raw.isdigit() or len(raw) > 19:
                raise ValueError(f"not an ID: {ident!r}")
            if truth.is_affected(raw):
                results[raw.decode()] = truth.row(raw)
    except (ValueError, TypeError, KeyError) as exc:
        return _bad(str(exc))
    return _json({"results": results})


async def requests(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return _json({"requests": [entry.public() for entry in state.request_log]})


async def reset_rate_limits(request: web.Request) -> web.Response:
    request.app[STATE].limiter.reset()
    return _json({"ok": True})


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/_sandbox", info)
    router.add_get("/_sandbox/health", health)
    router.add_route("*", "/_sandbox/clock", clock)
    router.add_route("*", "/_sandbox/faults", faults)
    router.add_post("/_sandbox/fail_next_jobs", fail_next_jobs)
    router.add_route("*", "/_sandbox/config", config)
    router.add_get("/_sandbox/jobs", jobs)
    router.add_get("/_sandbox/jobs/{id}/expected", job_expected)
    router.add_post("/_sandbox/expected", expected)
    router.add_get("/_sandbox/requests", requests)
    router.add_post("/_sandbox/rate_limits/reset", reset_rate_limits)
