"""The aiohttp application: routes plus one middleware that logs and injects faults."""

from __future__ import annotations

import asyncio
import math
import time
from email.utils import format_datetime

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from orchestrator.sandbox import api, bodies, control, download, storage, upload
from orchestrator.sandbox.faults import Fault
from orchestrator.sandbox.ratelimit import RateState
from orchestrator.sandbox.record import RequestRecord
from orchestrator.sandbox.state import STATE, SandboxState

log = structlog.get_logger(__name__)

_API_ENDPOINTS = ("create", "get", "list")


def classify(request: web.Request) -> str | None:
    """The fault/rate-limit endpoint name of a request, None for controls and unknown paths."""
    path = request.path
    if path.startswith("/_sandbox"):
        return None
    if path == "/2/compliance/jobs":
        return "create" if request.method == "POST" else "list"
    if path.startswith("/2/compliance/jobs/"):
        return "get"
    if "/submission/" in path:
        return "upload"
    if "/delivery/" in path:
        return "download"
    return None


def _fault_response(state: SandboxState, endpoint: str, fault: Fault) -> web.Response:
    status = int(fault.kind)
    if endpoint in _API_ENDPOINTS:
        if status == 429:
            reset = math.ceil(state.clock.timestamp() + fault.retry_after)
            rate = RateState(state.config.rate_limit, 0, reset, allowed=False)
            return api.api_response(bodies.TOO_MANY_REQUESTS, 429, rate)
        return api.api_response(bodies.SERVER_ERRORS[status], status)
    code, message = bodies.STORAGE_FAULTS[status]
    response = storage.xml_response(status, bodies.gcs_error(code, message))
    if status == 429:
        response.headers["Retry-After"] = str(math.ceil(fault.retry_after))
    return response


async def _truncated(
    request: web.Request, response: web.Response, fault: Fault
) -> web.StreamResponse:
    """Send the headers and only part of the body, then close the connection."""
    body = response.body if isinstance(response.body, bytes) else b""
    keep = fault.after_bytes if fault.after_bytes is not None else len(body) // 2
    partial = web.StreamResponse(status=response.status, headers=response.headers)
    partial.content_length = len(body)
    await partial.prepare(request)
    await partial.write(body[:keep])
    request[storage.TRUNCATED] = min(keep, len(body))
    if request.transport is not None:
        request.transport.close()
    return partial


async def _with_fault(
    request: web.Request, handler: Handler, endpoint: str, fault: Fault
) -> web.StreamResponse:
    state = request.app[STATE]
    if fault.kind == "slow":
        await asyncio.sleep(fault.delay)
        return await handler(request)
    if fault.kind == "403":
        if endpoint == "upload":
            await storage.drain(request)
        return storage.forbidden(request, state, fault.code)
    if fault.kind in ("429", "500", "503"):
        if endpoint == "upload":
            await storage.drain(request)
        return _fault_response(state, endpoint, fault)
    if fault.kind == "reset" and not (endpoint == "upload" and fault.after_bytes):
        return storage.drop(request)
    if fault.kind == "truncate" and endpoint != "download":
        response = await handler(request)
        if isinstance(response, web.Response):
            return await _truncated(request, response, fault)
        return response
    request[storage.FAULT] = fault  # handled inside the storage handlers
    return await handler(request)


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Fault injection, then one log line per request (never the query string)."""
    state = request.app[STATE]
    started = time.perf_counter()
    state.arrivals += 1
    arrived = state.arrivals
    endpoint = classify(request)
    fault = state.faults.take(endpoint) if endpoint is not None else None
    status = 0
    response: web.StreamResponse | None = None
    try:
        if fault is None:
            response = await handler(request)
        else:
            response = await _with_fault(request, handler, endpoint or "", fault)
        status = 0 if request.get(storage.DROPPED) else response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except (ConnectionError, asyncio.CancelledError):
        status = 0
        raise
    except Exception:
        status = 500
        log.exception("sandbox.handler_failed", method=request.method, path=request.path)
        raise
    finally:
        # A cut response is logged as what the client got: the status, then only `sent` bytes.
        sent = request.get(storage.TRUNCATED)
        cut = {} if sent is None else {"truncated": True, "sent": sent}
        if endpoint is not None or not request.path.startswith("/_sandbox"):
            state.request_log.append(RequestRecord(
                request.method, request.path, status, **cut, arrived=arrived,
                user_agent=request.headers.get("User-Agent")))
        log.info(
            "sandbox.request",
            method=request.method,
            path=request.path,
            status=status,
            endpoint=endpoint,
            fault=fault.kind if fault is not None else None,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
            **({} if sent is None else {"truncated": True, "bytes_sent": sent,
                                        "content_length": _promised(response)}),
        )


async def _server_date(request: web.Request, response: web.StreamResponse) -> None:
    """`Date` from the sandbox clock, as a server whose clock is that far off would send it
    (clients read `x-rate-limit-reset` against it)."""
    response.headers["Date"] = format_datetime(request.app[STATE].clock.now(), usegmt=True)


def _promised(response: web.StreamResponse | None) -> int | None:
    return None if response is None else response.content_length


def build_app(state: SandboxState) -> web.Application:
    # client_max_size only bounds request.read()/post(): uploads are streamed, not read.
    app = web.Application(middlewares=[observe], client_max_size=16 << 20)
    app[STATE] = state
    app.on_response_prepare.append(_server_date)
    control.add_routes(app)
    api.add_routes(app)
    app.router.add_route("*", "/{bucket}/{job_id}/submission/{object}", upload.submission)
    app.router.add_route("*", "/{bucket}/{job_id}/delivery/{object}", download.delivery)
    return app
