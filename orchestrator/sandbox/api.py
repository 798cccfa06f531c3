"""The X API side: POST/GET /2/compliance/jobs and GET /2/compliance/jobs/:id.

Order per request, as the real front end behaves: bearer auth (401), rate limit (429, the
request is counted per endpoint), then validation (400 invalid-request), then the work.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import Any

from aiohttp import web

from orchestrator.sandbox import bodies
from orchestrator.sandbox.ratelimit import RateState
from orchestrator.sandbox.state import STATE, SandboxState

API_VERSION = "2.42"
JOB_TYPES = ("tweets", "users")
LIST_STATUSES = ("created", "in_progress", "failed", "complete")  # no `expired` filter
JOB_FIELDS = (
    "created_at",
    "download_expires_at",
    "download_url",
    "id",
    "name",
    "resumable",
    "status",
    "type",
    "upload_expires_at",
    "upload_url",
)
_JOB_ID = re.compile(r"[0-9]{1,19}")
_BODY_KEYS = ("type", "name", "resumable")


def api_response(
    body: dict[str, Any],
    status: int = 200,
    rate: RateState | None = None,
    *,
    started: float | None = None,
) -> web.Response:
    headers = {
        "api-version": API_VERSION,
        "x-access-level": "read",
        "cache-control": "no-cache, no-store, max-age=0",
        "content-disposition": "attachment; filename=json.json",
        "x-transaction-id": secrets.token_hex(8),
    }
    if started is not None:
        headers["x-response-time"] = str(max(1, round((time.perf_counter() - started) * 1000)))
    if rate is not None:
        headers.update(rate.headers())
    content_type = bodies.API_CONTENT_TYPE if status < 400 else bodies.PROBLEM_CONTENT_TYPE
    headers["Content-Type"] = content_type
    return web.Response(
        status=status, body=json.dumps(body, separators=(",", ":")).encode(), headers=headers
    )


def _authorized(request: web.Request, state: SandboxState) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(
        token.strip().encode(), state.config.token.encode()
    )


def _gate(request: web.Request, endpoint: str) -> tuple[RateState | None, web.Response | None]:
    """Auth and rate limit. Returns (rate state, early response or None)."""
    state = request.app[STATE]
    started = time.perf_counter()
    if not _authorized(request, state):
        return None, api_response(
            bodies.UNAUTHORIZED, 401, state.limiter.peek(endpoint), started=started
        )
    rate = state.limiter.hit(endpoint)
    if not rate.allowed:
        return rate, api_response(bodies.TOO_MANY_REQUESTS, 429, rate, started=started)
    return rate, None


def _query_errors(request: web.Request, allowed: tuple[str, ...]) -> list[dict[str, Any]]:
    """Unknown query parameters and bad `compliance_job.fields` values."""
    errors: list[dict[str, Any]] = []
    query = request.rel_url.query
    for value in query.getall("compliance_job.fields", []):
        for item in value.split(","):
            if item not in JOB_FIELDS:
                errors.append(
                    bodies.param_error(
                        "compliance_job.fields",
                        [value],
                        f"The `compliance_job.fields` query parameter value [{item}] is not one "
                        f"of [{','.join(JOB_FIELDS)}]",
                    )
                )
    seen: set[str] = set()
    for key in query:
        if key in allowed or key in seen:
            continue
        seen.add(key)
        errors.append(
            bodies.param_error(
                key,
                query.getall(key),
                f"The query parameter [{key}] is not one of [{','.join(allowed)}]",
            )
        )
    return errors


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "integer" if isinstance(value, int) else "number"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"


def _body_errors(raw: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Validate the create body like the JSON-schema validator of the real API."""
    try:
        body = json.loads(raw) if raw.strip() else None
    except (ValueError, UnicodeDecodeError):
        return {}, [bodies.body_error("Request body is not valid JSON")]
    if body is None:
        return {}, [bodies.body_error("$.type: is missing but it is required")]
    if not isinstance(body, dict):
        return {}, [bodies.body_error(f"$: {_json_kind(body)} found, object expected")]
    errors = [
        bodies.body_error(
            f"$.{key}: is not defined in the schema and the schema does not allow additional "
            "properties"
        )
        for key in body
        if key not in _BODY_KEYS
    ]
    kind = body.get("type")
    if "type" not in body:
        errors.append(bodies.body_error("$.type: is missing but it is required"))
    elif not isinstance(kind, str):
        errors.append(bodies.body_error(f"$.type: {_json_kind(kind)} found, string expected"))
    elif kind not in JOB_TYPES:
        errors.append(
            bodies.body_error("$.type: does not have a value in the enumeration [tweets, users]")
        )
    name = body.get("name")
    if name is not None:
        if not isinstance(name, str):
            errors.append(bodies.body_error(f"$.name: {_json_kind(name)} found, string expected"))
        elif len(name) > 64:
            errors.append(bodies.body_error("$.name: may only be 64 characters long"))
    resumable = body.get("resumable")
    if resumable is not None and not isinstance(resumable, bool):
        errors.append(
            bodies.body_error(f"$.resumable: {_json_kind(resumable)} found, boolean expected")
        )
    return body, errors


async def create_job(request: web.Request) -> web.Response:
    started = time.perf_counter()
    rate, early = _gate(request, "create")
    if early is not None:
        return early
    state = request.app[STATE]
    body, errors = _body_errors(await request.read())
    errors = _query_errors(request, ("compliance_job.fields",)) + errors
    if errors:
        return api_response(bodies.invalid_request(errors), 400, rate, started=started)
    job_type = body["type"]
    if state.store.blocking_job(job_type) is not None:
        return api_response(bodies.CONFLICT, 409, rate, started=started)
    job = state.store.create(job_type, body.get("name"), bool(body.get("resumable", False)))
    return api_response({"data": job.public(state.clock.now())}, 200, rate, started=started)


async def get_job(request: web.Request) -> web.Response:
    started = time.perf_counter()
    rate, early = _gate(request, "get")
    if early is not None:
        return early
    state = request.app[STATE]
    job_id = request.match_info["id"]
    errors = []
    if not _JOB_ID.fullmatch(job_id):
        errors.append(
            bodies.param_error(
                "id",
                [job_id],
                f"The `id` query parameter value [{job_id}] does not match ^[0-9]{{1,19}}$",
            )
        )
    errors += _query_errors(request, ("compliance_job.fields",))
    if errors:
        return api_response(bodies.invalid_request(errors), 400, rate, started=started)
    job = state.store.get(job_id)
    if job is None:
        if state.config.unknown_job == "404":
            return api_response(bodies.job_not_found_problem(job_id), 404, rate, started=started)
        return api_response({"errors": [bodies.job_not_found(job_id)]}, 200, rate, started=started)
    return api_response({"data": job.public(state.clock.now())}, 200, rate, started=started)


async def list_jobs(request: web.Request) -> web.Response:
    started = time.perf_counter()
    rate, early = _gate(request, "list")
    if early is not None:
        return early
    state = request.app[STATE]
    query = request.rel_url.query
    errors: list[dict[str, Any]] = []
    types = [value for value in query.getall("type", []) if value]
    job_type = ",".join(types)
    if not types:
        errors.append(bodies.param_error("type", [], "The `type` query parameter can not be empty"))
    elif job_type not in JOB_TYPES:
        errors.append(
            bodies.param_error(
                "type",
                types,
                f"The `type` query parameter value [{job_type}] is not one of [tweets,users]",
            )
        )
    statuses = query.getall("status", [])
    status = ",".join(statuses) if statuses else None
    if status is not None and status not in LIST_STATUSES:
        errors.append(
            bodies.param_error(
                "status",
                statuses,
                f"The `status` query parameter value [{status}] is not one of "
                f"[{','.join(LIST_STATUSES)}]",
            )
        )
    errors += _query_errors(request, ("type", "status", "compliance_job.fields"))
    if errors:
        return api_response(bodies.invalid_request(errors), 400, rate, started=started)
    now = state.clock.now()
    jobs = [job.public(now) for job in state.store.listing(job_type, status)]
    body: dict[str, Any] = {}
    if jobs:
        body["data"] = jobs
    if state.config.include_result_count and (jobs or state.config.empty_list_meta):
        body["meta"] = {"result_count": len(jobs)}
    return api_response(body, 200, rate, started=started)


async def not_found(request: web.Request) -> web.Response:
    return api_response(bodies.NOT_FOUND_PAGE, 404)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/2/compliance/jobs", create_job)
    app.router.add_get("/2/compliance/jobs", list_jobs)
    app.router.add_get("/2/compliance/jobs/{id}", get_job)
    app.router.add_route("*", "/2/{tail:.*}", not_found)
