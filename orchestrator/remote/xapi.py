"""X API v2 batch compliance adapter: create / get / list jobs, HTTP failures -> domain errors.

Every failure is classified here, once (see orchestrator.errors): connection trouble, timeouts,
408, 409, 429 and 5xx are transient (RetryableError), 401/403 AuthError, any other 4xx
PermanentError. Error messages and log lines are built only from redacted pieces: aiohttp's
own exception text embeds full URLs, and the bearer token must never leave the Authorization
header.

X's timestamps (created_at, upload_expires_at, download_expires_at) are instants on X's clock.
Each response's `Date` header says how far that is from ours, and a job's times are moved onto
the local clock by that much, so the deadlines the daemon derives from them hold even when
the local clock is minutes off (judged against the local clock they would pass 15 min early).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any, NoReturn

import aiohttp
import structlog

from orchestrator.clock import SYSTEM_CLOCK, Clock
from orchestrator.core.model import JobType, RemoteJob
from orchestrator.core.ratelimit import (
    MAX_WAIT_S,
    RESET_HEADER,
    SKEW_TOLERANCE_S,
    RateBudget,
    seconds_until,
    server_now,
)
from orchestrator.errors import (
    AuthError,
    ConflictError,
    PermanentError,
    RateLimited,
    RemoteError,
    RetryableError,
)
from orchestrator.redact import redact_text
from orchestrator.remote.http import read_limited

log = structlog.get_logger(__name__)

JOBS_PATH = "/2/compliance/jobs"
# When a 429 carries no usable reset header: a quarter of the 15-minute window.
DEFAULT_RATE_LIMIT_WAIT_S = 60.0
_JOB_ID = re.compile(r"[0-9]{1,19}")
_MAX_SKIPPED_REMEMBERED = 1000


def make_session(
    connect_timeout_s: float, read_timeout_s: float, *, user_agent: str | None = None,
    guard: Callable[[], None] | None = None,
) -> aiohttp.ClientSession:
    """The one client session of the app, for the API and for storage transfers: every
    request to X or its storage goes through it.

    No total timeout: a large upload or download may legitimately take a long time; what must
    not hang is connecting and each socket read. trust_env: HTTPS_PROXY / HTTP_PROXY /
    NO_PROXY (and ALL_PROXY) are honoured, as operators behind an egress proxy expect.
    `user_agent` is sent with every request. `guard` runs before every request is sent (each
    redirect and retry too): it raises (daemon.cluster: LeaseLost) to keep it from being sent.
    """
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s
    )

    async def guarded(
        request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        if guard is not None:
            guard()
        return await handler(request)

    # Cookies are of no use to either side and would only be state to leak.
    return aiohttp.ClientSession(
        timeout=timeout, cookie_jar=aiohttp.DummyCookieJar(), trust_env=True,
        headers={"User-Agent": user_agent} if user_agent else None,
        middlewares=(guarded,) if guard is not None else (),
    )


def redact_problem(value: Any, secrets: tuple[str, ...] = ()) -> Any:
    """A parsed error body with every string value scrubbed (nested dicts and lists too)."""
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, Mapping):
        return {str(k): redact_problem(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_problem(v, secrets) for v in value]
    return value


def _problem_type(problem: Mapping[str, Any] | None) -> str:
    if not problem:
        return ""
    kind = problem.get("type")
    if isinstance(kind, str) and kind != "about:blank":
        return kind
    errors = problem.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], Mapping):
        inner = errors[0].get("type")
        if isinstance(inner, str):
            return inner
    return kind if isinstance(kind, str) else ""


def _summary(problem: Mapping[str, Any] | None) -> str:
    """A short human description of an (already redacted) problem body."""
    if not problem:
        return ""
    parts: list[str] = []
    for key in ("title", "detail"):
        value = problem.get(key)
        if isinstance(value, str) and value and value not in parts:
            parts.append(value)
    errors = problem.get("errors")
    if isinstance(errors, list):
        for item in errors[:3]:
            if isinstance(item, Mapping):
                text = item.get("message") or item.get("detail")
                if isinstance(text, str) and text:
                    parts.append(text)
    if not parts and isinstance(problem.get("body"), str):
        parts.append(problem["body"])
    return "; ".join(parts)[:500]


class XApi:
    """Client of the three compliance endpoints. One instance per app; safe to share."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        token: str,
        *,
        budget: RateBudget | None = None,
        clock: Clock = SYSTEM_CLOCK,
        on_request: Callable[[str, int | None], None] | None = None,
    ) -> None:
        self._session = session
        self._on_request = on_request  # (endpoint, HTTP status or None): metrics
        self._base_url = base_url.rstrip("/")
        self._token = token
        self._clock = clock
        self.budget = budget if budget is not None else RateBudget()
        # X's clock minus ours, per the last response's Date (0 within SKEW_TOLERANCE_S).
        self.clock_offset_s = 0.0
        self._reported_offset_s = 0.0
        self._skipped: set[str] = set()  # list entries already reported as unreadable

    # -- endpoints -----------------------------------------------------------------------

    async def create_job(
        self, job_type: JobType, *, name: str, resumable: bool = False
    ) -> RemoteJob:
        body: dict[str, Any] = {"type": str(job_type), "name": name}
        if resumable:
            body["resumable"] = True
        payload = await self._call("create", "POST", JOBS_PATH, json_body=body)
        return self._job_from(payload.get("data"), "create")

    async def get_job(self, job_id: str) -> RemoteJob:
        if not _JOB_ID.fullmatch(job_id):
            # Never put an unchecked string into the request path.
            raise PermanentError(
                f"X API get: job id {job_id[:40]!r} is not 1-19 digits", endpoint="get"
            )
        payload = await self._call("get", "GET", f"{JOBS_PATH}/{job_id}")
        if "data" not in payload and isinstance(payload.get("errors"), list):
            # v2 style "resource-not-found" inside a 200 envelope.
            problem = redact_problem(payload, (self._token,))
            raise PermanentError(
                f"X API get: HTTP 200 without a job: {_summary(problem) or 'no data'}",
                http_status=200,
                problem=problem,
                endpoint="get",
            )
        return self._job_from(payload.get("data"), "get")

    async def list_jobs(self, job_type: JobType, status: str | None = None) -> list[RemoteJob]:
        params = {"type": str(job_type)}
        if status is not None:
            params["status"] = str(status)
        payload = await self._call("list", "GET", JOBS_PATH, params=params)
        data = payload.get("data")
        if data is None:  # empty lists come without `data` (and 2021 answers without `meta`)
            return []
        if not isinstance(data, list):
            raise self._malformed("list", "`data` is not a list")
        jobs = []
        for item in data:
            try:
                jobs.append(self._job_from(item, "list"))
            except RetryableError as error:
                # One bad entry must not hide the others: a batch in CREATING looks for its
                # job in this list, and would ask again forever.
                self._skipped_list_item(item, error)
        return jobs

    async def find_job_by_name(self, job_type: JobType, name: str) -> RemoteJob | None:
        """The newest job of that type carrying `name`, or None."""
        matches = [job for job in await self.list_jobs(job_type) if job.name == name]
        if not matches:
            return None
        # The list is newest first; max() keeps the first of equal timestamps.
        return max(matches, key=lambda job: job.created_at)

    # -- plumbing ------------------------------------------------------------------------

    def _job_from(self, data: Any, endpoint: str) -> RemoteJob:
        if not isinstance(data, dict):
            raise self._malformed(endpoint, "no job object in `data`")
        try:
            job = RemoteJob.from_api(data)
        except (KeyError, ValueError, TypeError) as exc:
            raise self._malformed(endpoint, f"bad job object ({type(exc).__name__})") from None
        return self.to_local_clock(job)

    def _skipped_list_item(self, item: Any, error: RetryableError) -> None:
        """Say once per entry that a listed job could not be read (its id only if it looks
        like one: no other value of it reaches the log)."""
        raw_id = item.get("id") if isinstance(item, dict) else None
        job_id = raw_id if isinstance(raw_id, str) and _JOB_ID.fullmatch(raw_id) else None
        key = job_id or hashlib.sha256(repr(item).encode()).hexdigest()
        if key in self._skipped:
            return
        if len(self._skipped) >= _MAX_SKIPPED_REMEMBERED:
            self._skipped.clear()
        self._skipped.add(key)
        log.warning("xapi.list_item_skipped", endpoint="list", job_id=job_id,
                    error_msg=redact_text(str(error), (self._token,)),
                    action="ignored; the other jobs of the list are used")

    def to_local_clock(self, job: RemoteJob) -> RemoteJob:
        """The job with its times moved from X's clock onto ours (see the module doc)."""
        if self.clock_offset_s == 0.0:
            return job
        shift = timedelta(seconds=-self.clock_offset_s)
        return replace(
            job, created_at=job.created_at + shift,
            upload_expires_at=job.upload_expires_at + shift,
            download_expires_at=job.download_expires_at + shift,
        )

    def _measure_clock(self, headers: Mapping[str, str]) -> None:
        if not any(key.lower() == "date" for key in headers):
            return  # nothing measured: keep what the last Date said
        local = self._clock.now().timestamp()
        offset = round(server_now(headers, local) - local, 1)
        self.clock_offset_s = offset
        if abs(offset - self._reported_offset_s) > SKEW_TOLERANCE_S:
            self._reported_offset_s = offset
            # Once per change: X's deadlines are judged on its clock, not ours.
            log.warning("xapi.clock_skew", offset_s=offset,
                        detail="X's clock (its Date header) differs from the local clock; "
                               "job deadlines are corrected by the difference")

    def _malformed(self, endpoint: str, why: str) -> RetryableError:
        return RetryableError(
            f"X API {endpoint}: HTTP 200 with a malformed body: {why}",
            http_status=200,
            endpoint=endpoint,
        )

    async def _call(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        url = self._base_url + path
        # The token goes only here, to the API host; redirects are not followed, so it can
        # never be forwarded anywhere else.
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        started = self._clock.monotonic()
        status: int | None = None
        try:
            async with self._session.request(
                method,
                url,
                params=params,
                json=json_body,
                headers=headers,
                allow_redirects=False,
            ) as resp:
                status = resp.status
                self.budget.update(endpoint, resp.headers, now=self._clock.now().timestamp())
                self._measure_clock(resp.headers)
                if status == 200:
                    raw = await resp.read()
                    return self._parse_ok(endpoint, raw)
                body = await read_limited(resp)
                self._raise_for(endpoint, status, resp.headers, body)
        except RemoteError:
            raise
        except (
            aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError, OSError
        ) as exc:
            # Refused, reset, DNS, TLS, timeouts (an OSError aiohttp let through too).
            raise RetryableError(
                f"X API {endpoint}: {self._describe(exc)}", http_status=status, endpoint=endpoint
            ) from None
        except aiohttp.InvalidURL as exc:
            raise PermanentError(
                f"X API {endpoint}: {self._describe(exc)}", endpoint=endpoint
            ) from None
        except aiohttp.ClientError as exc:
            raise RetryableError(
                f"X API {endpoint}: {self._describe(exc)}", http_status=status, endpoint=endpoint
            ) from None
        finally:
            if self._on_request is not None:
                self._on_request(endpoint, status)
            log.debug(
                "xapi.request",
                endpoint=endpoint,
                http_status=status,
                duration_ms=round((self._clock.monotonic() - started) * 1000, 1),
            )

    def _describe(self, exc: BaseException) -> str:
        text = redact_text(str(exc), (self._token,)).strip()
        name = type(exc).__name__
        return f"{name} ({text})" if text else name

    def _parse_ok(self, endpoint: str, raw: bytes) -> dict[str, Any]:
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise self._malformed(endpoint, "not JSON") from None
        if not isinstance(payload, dict):
            raise self._malformed(endpoint, "not a JSON object")
        return payload

    def _parse_problem(self, body: bytes) -> dict[str, Any] | None:
        if not body:
            return None
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            text = body.decode("utf-8", "replace").strip()[:500]
            return {"body": redact_text(text, (self._token,))} if text else None
        if isinstance(parsed, dict):
            problem: dict[str, Any] = redact_problem(parsed, (self._token,))
            return problem
        return {"body": redact_text(str(parsed)[:500], (self._token,))}

    def _retry_after(self, headers: Mapping[str, str]) -> float:
        reset = headers.get(RESET_HEADER)
        if reset is not None:
            try:
                # Measured on the server's clock (its Date header): ours may be off by minutes.
                wait = seconds_until(float(reset), headers, self._clock.now().timestamp())
            except ValueError:
                wait = None
            if wait is not None:
                # A reset in the past still means "not right now".
                return min(max(wait, 1.0), MAX_WAIT_S)
        retry_after = headers.get("Retry-After")
        if retry_after is not None and retry_after.strip().isdigit():
            return min(float(retry_after), MAX_WAIT_S)
        return DEFAULT_RATE_LIMIT_WAIT_S

    def _raise_for(
        self, endpoint: str, status: int, headers: Mapping[str, str], body: bytes
    ) -> NoReturn:
        problem = self._parse_problem(body)
        summary = _summary(problem)
        message = f"X API {endpoint}: HTTP {status}" + (f": {summary}" if summary else "")
        common: dict[str, Any] = {"http_status": status, "problem": problem, "endpoint": endpoint}
        if status == 429:
            retry_after = self._retry_after(headers)
            current = self.budget.get(endpoint)
            if current is None or current.remaining > 0:
                self.budget.exhaust(endpoint, self._clock.now().timestamp() + retry_after)
            raise RateLimited(message, retry_after=retry_after, **common)
        if status == 409 or _problem_type(problem).endswith("/conflict"):
            raise ConflictError(message, **common)
        if status in (401, 403):
            raise AuthError(message, **common)
        if status >= 500 or status == 408:
            raise RetryableError(message, **common)
        raise PermanentError(message, **common)


__all__ = ["XApi", "make_session", "redact_problem"]
