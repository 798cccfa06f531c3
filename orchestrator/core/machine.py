"""PURE job state machine: what a batch needs next, and what an observation changes. No I/O.

`plan(batch, now, policy)` says which step is due; the runner performs it through an adapter
and turns the outcome into an Observation; `decide(batch, observation, now, policy, rng)`
returns the Decision the store persists with a compare-and-set on the batch state.

The outage model (README, "What happens when things fail"): a transient error (core.retry)
is retried in place, with capped backoff, without end, until a deadline makes the step
impossible: the upload window (then a new job) or the download link's expiry (then the batch
is resubmitted). Only permanent answers (a 4xx, a failed or expired remote job, a window X
said is closed) use up the batch's `max_attempts` remote jobs and may reject its inputs.
All times here are on the local clock: the X adapter moves X's timestamps onto it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from orchestrator.core.decision import CLEAR_REMOTE, Decision, RemoteOutcome, fresh_stage
from orchestrator.core.limits import poll_spacing_s
from orchestrator.core.model import Batch, BatchState, RemoteJob, RemoteStatus
from orchestrator.core.polling import Estimate, next_poll_s, poll_interval
from orchestrator.core.retry import GiveUp, RetryPolicy, retry_decision
from orchestrator.errors import (
    AuthError,
    DownloadDeadlinePassed,
    DownloadExpired,
    RemoteJobEnded,
    UploadDeadlinePassed,
    UploadWindowClosed,
)

S = BatchState
OWN_JOB_SLACK_S = 5.0  # past an abandoned job's upload window before the next POST

# Cancelled: only by the operator (core.operator), from a state where a remote job exists
# only with --force. Self-transitions: retries, polls, and the operator's `retry` now.
ALLOWED: Final[dict[BatchState, frozenset[BatchState]]] = {
    S.QUEUED: frozenset({S.QUEUED, S.CREATING, S.CANCELLED}),
    S.CREATING: frozenset({S.CREATING, S.UPLOADING, S.QUEUED, S.FAILED, S.CANCELLED}),
    S.UPLOADING: frozenset({S.UPLOADING, S.WAITING, S.QUEUED, S.FAILED, S.CANCELLED}),
    S.WAITING: frozenset({S.WAITING, S.DOWNLOADING, S.QUEUED, S.FAILED, S.CANCELLED}),
    S.DOWNLOADING: frozenset({S.DOWNLOADING, S.DELIVERING, S.QUEUED, S.FAILED, S.CANCELLED}),
    S.DELIVERING: frozenset({S.DELIVERING, S.DONE}),
    S.DONE: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class Policy:
    max_attempts: int = 5
    upload_margin_s: float = 60.0
    download_margin_s: float = 3600.0
    poll_initial_s: float = 5.0
    poll_max_s: float = 60.0
    poll_factor: float = 1.5
    # Never wait longer than this share of the job's age: completion is noticed within ~10%
    # of how long the job took (or poll_initial_s for quick ones).
    poll_age_fraction: float = 0.1
    # Polls of one job after another stay within X's rate limit (less the reserve for other
    # clients): the age-based cap never goes below this spacing.
    poll_min_spacing_s: float = field(default_factory=poll_spacing_s)
    retry: RetryPolicy = field(default_factory=RetryPolicy)


# ---- steps (what plan() asks the runner to do) --------------------------------------------


@dataclass(frozen=True, slots=True)
class Sleep:
    until: datetime


@dataclass(frozen=True, slots=True)
class StartAttempt:
    """Persist the intent to create remote job number `attempt` (QUEUED -> CREATING)."""

    attempt: int


@dataclass(frozen=True, slots=True)
class CreateJob:
    name: str


@dataclass(frozen=True, slots=True)
class Upload:
    pass


@dataclass(frozen=True, slots=True)
class Poll:
    pass


@dataclass(frozen=True, slots=True)
class Download:
    pass


@dataclass(frozen=True, slots=True)
class Deliver:
    pass


@dataclass(frozen=True, slots=True)
class Abandon:
    """A deadline passed without a call: feed `error` back through decide()."""

    error: Exception


Step = Sleep | StartAttempt | CreateJob | Upload | Poll | Download | Deliver | Abandon | None


# ---- observations (what the runner saw) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobCreated:
    job: RemoteJob
    adopted: bool = False


@dataclass(frozen=True, slots=True)
class UploadSessionStarted:
    session_url: str


@dataclass(frozen=True, slots=True)
class UploadFinished:
    # When the job should end (earlier jobs of its type) and the rate budget's spacing now:
    # what the first poll is timed by (core.polling). None: the no-history schedule.
    estimate: Estimate | None = None
    spacing_s: float | None = None


@dataclass(frozen=True, slots=True)
class Polled:
    job: RemoteJob
    estimate: Estimate | None = None  # as in UploadFinished, for the next poll
    spacing_s: float | None = None
    # When the request was sent: the job was complete by then. Recorded as completed_at, so
    # the next jobs' estimates do not creep up by every response's latency.
    asked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Downloaded:
    affected: int


@dataclass(frozen=True, slots=True)
class DeliveredAll:
    pass


@dataclass(frozen=True, slots=True)
class StepFailed:
    error: Exception


Observation = (
    JobCreated | UploadSessionStarted | UploadFinished | Polled | Downloaded | DeliveredAll
    | StepFailed
)


def upload_deadline(batch: Batch, policy: Policy) -> datetime | None:
    if batch.upload_expires_at is None:
        return None
    return batch.upload_expires_at - timedelta(seconds=policy.upload_margin_s)


def download_deadline(batch: Batch, policy: Policy) -> datetime | None:
    if batch.download_expires_at is None:
        return None
    return batch.download_expires_at - timedelta(seconds=policy.download_margin_s)


def plan(batch: Batch, now: datetime, policy: Policy) -> Step:
    state = batch.state
    if state.is_final:
        return None
    if state is S.UPLOADING:
        deadline = upload_deadline(batch, policy)
        if deadline is not None and now >= deadline:
            return Abandon(UploadDeadlinePassed("upload window (minus safety margin) has passed"))
    if state in (S.WAITING, S.DOWNLOADING):
        deadline = download_deadline(batch, policy)
        if deadline is not None and now >= deadline:
            return Abandon(
                DownloadDeadlinePassed("download deadline (minus safety margin) has passed"))
    if batch.next_attempt_at is not None and now < batch.next_attempt_at:
        return Sleep(batch.next_attempt_at)
    match state:
        case S.QUEUED:
            return StartAttempt(batch.attempt + 1)
        case S.CREATING:
            return CreateJob(batch.remote_name(batch.attempt))
        case S.UPLOADING:
            return Upload()
        case S.WAITING:
            return Poll()
        case S.DOWNLOADING:
            return Download()
        case S.DELIVERING:
            return Deliver()
    return None


def start_attempt(batch: Batch, attempt: int) -> Decision:
    return Decision(
        S.CREATING, "job.creating",
        {**CLEAR_REMOTE, **fresh_stage(), "attempt": attempt,
         "x_job_name": batch.remote_name(attempt)},
        detail={"attempt": attempt},
    )


def _new_job_or_fail(
    batch: Batch, now: datetime, policy: Policy, rng: random.Random, *, why: str, code: str,
    event: str, level: str = "warning", detail: Mapping[str, Any] | None = None,
    own_job_active: bool = True, permanent: bool = True,
) -> Decision:
    """The remote job is lost (failed, expired, window closed): start over with a new one,
    unless the batch has used up its attempts on a permanent answer. A job lost to our own
    deadline (`permanent=False`: an outage outlasted it) is always replaced."""
    # As in .error.json: `reason` a code, `message` the words.
    info = {"reason": code, "message": why, "attempt": batch.attempt, **(detail or {})}
    # The lost job's last word: failed / expired as X said, else we stopped tracking it.
    outcome = RemoteOutcome(str(info.get("status") or "abandoned"), info.get("job_error"))
    if permanent and batch.attempt >= policy.max_attempts:
        return Decision(
            S.FAILED, "batch.gave_up", {**fresh_stage(), "last_error": why}, level="error",
            detail={**info, "max_attempts": policy.max_attempts},
            reject_reason=f"{why}; gave up after {batch.attempt} remote job(s)",
            remote_outcome=outcome,
        )
    next_at = now + timedelta(seconds=rng.uniform(0.0, policy.retry.backoff_initial_s))
    if own_job_active and batch.state is S.UPLOADING and batch.upload_expires_at is not None:
        # A job abandoned before its upload counts as active until its window ends: a POST
        # before then would only meet a 409 from our own job.
        next_at = max(next_at, batch.upload_expires_at + timedelta(seconds=OWN_JOB_SLACK_S))
        info["new_job_not_before"] = next_at.isoformat()
    return Decision(
        S.QUEUED, event,
        {**CLEAR_REMOTE, **fresh_stage(), "last_error": why, "next_attempt_at": next_at},
        level=level, detail=info, remote_outcome=outcome,
    )


def decide(
    batch: Batch, obs: Observation, now: datetime, policy: Policy, rng: random.Random
) -> Decision:
    state = batch.state
    match obs:
        case JobCreated(job=job, adopted=adopted) if state is S.CREATING:
            return Decision(
                S.UPLOADING, "job.adopted" if adopted else "job.created",
                {**fresh_stage(), "x_job_id": job.id, "x_status": str(job.status),
                 "x_created_at": job.created_at, "upload_url": job.upload_url,
                 "upload_expires_at": job.upload_expires_at, "download_url": job.download_url,
                 "download_expires_at": job.download_expires_at, "resumable": job.resumable},
                detail={"x_job_id": job.id, "attempt": batch.attempt,
                        "upload_expires_at": job.upload_expires_at.isoformat()},
            )
        case UploadSessionStarted(session_url=url) if state is S.UPLOADING:
            return Decision(S.UPLOADING, "upload.session_started", {"upload_session_url": url},
                            level="debug")
        case UploadFinished(estimate=est, spacing_s=spacing) if state is S.UPLOADING:
            first = next_poll_s(0.0, 0, policy, est, spacing)
            expected = {} if est is None else {"expected_s": round(est.expected_s, 1)}
            return Decision(
                S.WAITING, "upload.completed",
                {**fresh_stage(), "uploaded_at": now, "poll_count": 0,
                 "next_attempt_at": now + timedelta(seconds=first)},
                detail={"bytes": batch.upload_bytes, "ids": batch.id_count,
                        "first_poll_in_s": round(first, 2), **expected},
            )
        case Polled() if state is S.WAITING:
            return _on_polled(batch, obs, now, policy, rng)
        case Downloaded(affected=affected) if state is S.DOWNLOADING:
            return Decision(S.DELIVERING, "download.completed", fresh_stage(),
                            detail={"affected": affected})
        case DeliveredAll() if state is S.DELIVERING:
            return Decision(S.DONE, "batch.done", fresh_stage())
        case StepFailed(error=error):
            return _on_error(batch, error, now, policy, rng)
    raise ValueError(f"observation {type(obs).__name__} is not valid in state {state}")


def _on_polled(
    batch: Batch, polled: Polled, now: datetime, policy: Policy, rng: random.Random
) -> Decision:
    job = polled.job
    status = job.status
    if status == RemoteStatus.COMPLETE:
        return Decision(
            S.DOWNLOADING, "job.status",
            {**fresh_stage(), "x_status": status, "completed_at": polled.asked_at or now,
             "poll_count": batch.poll_count + 1},
            detail={"status": str(status), "polls": batch.poll_count + 1},
            remote_outcome=RemoteOutcome(str(status)),
        )
    if status == RemoteStatus.FAILED:
        return _new_job_or_fail(
            batch, now, policy, rng, why=f"remote job failed: {job.error or 'no reason given'}",
            code="job_failed", event="job.failed",
            detail={"x_job_id": job.id, "job_error": job.error, "status": "failed"},
        )
    if status == RemoteStatus.EXPIRED:
        return _new_job_or_fail(
            batch, now, policy, rng, why="remote job expired", code="job_expired",
            event="job.expired",
            detail={"x_job_id": job.id, "status": "expired"},
        )
    # created / in_progress / a status we don't know yet: keep polling, less often over time.
    if batch.uploaded_at is None:  # not after an upload of ours: the plain schedule
        interval = poll_interval(batch.poll_count + 1, policy, None)
    else:
        age_s = (now - batch.uploaded_at).total_seconds()
        interval = next_poll_s(age_s, batch.poll_count + 1, policy, polled.estimate,
                               polled.spacing_s)
    changed = str(status) != (batch.x_status or "")
    return Decision(
        S.WAITING, "job.status",
        {**fresh_stage(), "x_status": str(status), "poll_count": batch.poll_count + 1,
         "next_attempt_at": now + timedelta(seconds=interval)},
        level="info" if changed else "debug",
        detail={"status": str(status), "polls": batch.poll_count + 1,
                "next_poll_in_s": round(interval, 1)},
        remote_outcome=RemoteOutcome(str(status)),
    )


def _on_error(
    batch: Batch, error: Exception, now: datetime, policy: Policy, rng: random.Random
) -> Decision:
    state = batch.state
    http_status = getattr(error, "http_status", None)
    detail = {"stage": str(state), "error": type(error).__name__, "http_status": http_status}
    base = {"last_error": f"{type(error).__name__}: {error}", "last_http_status": http_status}
    remote_deadline = isinstance(error, UploadWindowClosed | DownloadExpired)
    if remote_deadline and state is not S.DELIVERING:
        level = "error" if isinstance(error, DownloadExpired) else "warning"
        return _new_job_or_fail(
            batch, now, policy, rng, why=str(error), event="job.abandoned", level=level,
            code=("download_expired" if isinstance(error, DownloadExpired) else
                  "job_ended" if isinstance(error, RemoteJobEnded) else "upload_window_closed"),
            detail=detail, own_job_active=not isinstance(error, RemoteJobEnded),
            permanent=not isinstance(error, UploadDeadlinePassed | DownloadDeadlinePassed),
        )
    if state is S.DELIVERING or isinstance(error, OSError):
        # Local trouble (outbox not writable, spool disk full, I/O error): wait and retry
        # without end. A completed remote job is never thrown away for it; the upload and
        # download deadlines (in plan) still apply. Once delivering, the results are on our
        # disk: no remote deadline can take them away (ALLOWED has no DELIVERING -> QUEUED).
        retries = batch.stage_waits
        delay = min(policy.retry.backoff_max_s,
                    policy.retry.backoff_initial_s * 2 ** min(retries, 30))
        event = "outbox.write_failed" if state is S.DELIVERING else "local.io_failed"
        return Decision(
            state, event,
            {**base, "stage_waits": retries + 1, "next_attempt_at": now + timedelta(seconds=delay)},
            level="warning" if retries == 0 else "debug",
            detail={**detail, "retry_in_s": round(delay, 1)},
        )
    verdict = retry_decision(
        error, counted_so_far=batch.stage_retries, waits_so_far=batch.stage_waits,
        policy=policy.retry, rng=rng,
    )
    if isinstance(verdict, GiveUp):
        # A permanent answer: the same request will not succeed.
        if state is S.CREATING:
            return Decision(
                S.FAILED, "batch.gave_up", {**base, **fresh_stage()}, level="error",
                detail={**detail, "reason": "permanent_error",
                        "message": f"could not create a compliance job: {verdict.reason}"},
                reject_reason=f"could not create a compliance job: {error}",
            )
        return _new_job_or_fail(batch, now, policy, rng, why=f"{state} failed: {error}",
                                code="permanent_error", event="job.abandoned", detail=detail)
    # Transient: the same step again after the delay, however long the outage lasts.
    resume_at = now + timedelta(seconds=verdict.delay_s)
    changes = {**base, "next_attempt_at": resume_at}
    if verdict.counted:
        changes["stage_retries"] = batch.stage_retries + 1
    else:
        changes["stage_waits"] = batch.stage_waits + 1
    is_auth = isinstance(error, AuthError)
    incident = {"incident": True, "max_stage_retries": policy.retry.max_stage_retries}
    return Decision(
        state, "xapi.auth_failed" if is_auth else "step.retry", changes,
        level="error" if is_auth or verdict.escalate else "warning",
        detail={**detail, "retry_in_s": round(verdict.delay_s, 1),
                "resume_at": resume_at.isoformat(),
                "attempt": batch.stage_retries + (1 if verdict.counted else 0),
                **(incident if verdict.escalate else {})},
        pause=is_auth,
    )
