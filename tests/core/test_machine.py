"""The pure state machine and retry policy (the outage model), table-driven. No loop, no I/O.

Transient errors (every stage x every transient class) are retried in place without end, with
capped backoff, and never reject an input or drop a remote job; only deadlines and permanent
answers lead to a new job, and only permanent answers use up `max_attempts`.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.core import machine
from orchestrator.core.machine import ALLOWED, Policy, decide, plan
from orchestrator.core.model import Batch, BatchState, JobType, RemoteJob, RemoteStatus
from orchestrator.core.retry import GiveUp, RetryAt, RetryPolicy, retry_decision
from orchestrator.errors import (
    AuthError,
    ConflictError,
    DownloadDeadlinePassed,
    DownloadExpired,
    IntegrityError,
    PermanentError,
    RateLimited,
    RemoteJobEnded,
    RetryableError,
    UploadDeadlinePassed,
    UploadWindowClosed,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
S = BatchState
POLICY = Policy(max_attempts=3, upload_margin_s=60, download_margin_s=3600,
                poll_initial_s=5, poll_max_s=60, poll_factor=2,
                retry=RetryPolicy(max_stage_retries=3, backoff_initial_s=2, backoff_max_s=300))


def rng() -> random.Random:
    return random.Random(1)


def remote(status: RemoteStatus | str = RemoteStatus.CREATED, error: str | None = None,
           created: datetime = NOW) -> RemoteJob:
    return RemoteJob(
        id="1446017776678801409", type=JobType.TWEETS, status=status, created_at=created,
        upload_url="https://storage.example/up?X-Goog-Signature=abc",
        upload_expires_at=created + timedelta(minutes=15),
        download_url="https://storage.example/down?X-Goog-Signature=def",
        download_expires_at=created + timedelta(days=7), name="co-k-1", error=error,
    )


def batch(state: BatchState, **changes: object) -> Batch:
    base = Batch(id=1, key="co-k", job_type=JobType.TWEETS, state=state, attempt=1,
                 id_count=10, upload_bytes=200, upload_name="x.ids")
    if state not in (S.QUEUED, S.CREATING):
        job = remote()
        base = replace(base, x_job_id=job.id, upload_url=job.upload_url,
                       upload_expires_at=job.upload_expires_at, download_url=job.download_url,
                       download_expires_at=job.download_expires_at, x_status="created")
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (S.QUEUED, machine.StartAttempt(2)),
        (S.CREATING, machine.CreateJob("co-k-1")),
        (S.UPLOADING, machine.Upload()),
        (S.WAITING, machine.Poll()),
        (S.DOWNLOADING, machine.Download()),
        (S.DELIVERING, machine.Deliver()),
        (S.DONE, None),
        (S.FAILED, None),
        (S.CANCELLED, None),
    ],
)
def test_plan_names_the_step_each_state_needs(state: BatchState, expected: object) -> None:
    assert plan(batch(state), NOW, POLICY) == expected


def test_plan_waits_for_next_attempt_time() -> None:
    later = NOW + timedelta(seconds=30)
    assert plan(batch(S.WAITING, next_attempt_at=later), NOW, POLICY) == machine.Sleep(later)


def test_plan_abandons_upload_when_window_minus_margin_has_passed() -> None:
    late = NOW + timedelta(minutes=14, seconds=1)  # window 15 min, margin 60 s
    step = plan(batch(S.UPLOADING), late, POLICY)
    assert isinstance(step, machine.Abandon)
    assert isinstance(step.error, UploadWindowClosed)
    # and a minute earlier it still uploads
    assert plan(batch(S.UPLOADING), NOW + timedelta(minutes=13), POLICY) == machine.Upload()


@pytest.mark.parametrize("state", [S.WAITING, S.DOWNLOADING])
def test_plan_abandons_when_download_deadline_is_near(state: BatchState) -> None:
    late = NOW + timedelta(days=7) - timedelta(minutes=59)
    step = plan(batch(state), late, POLICY)
    assert isinstance(step, machine.Abandon)
    assert isinstance(step.error, DownloadExpired)


def test_start_attempt_persists_the_remote_name_before_the_post() -> None:
    decision = machine.start_attempt(batch(S.QUEUED, attempt=1), 2)
    assert decision.to_state is S.CREATING
    assert decision.changes["attempt"] == 2
    assert decision.changes["x_job_name"] == "co-k-2"


@pytest.mark.parametrize(
    ("state", "observation", "to_state", "event"),
    [
        (S.CREATING, machine.JobCreated(remote()), S.UPLOADING, "job.created"),
        (S.CREATING, machine.JobCreated(remote(), adopted=True), S.UPLOADING, "job.adopted"),
        (S.UPLOADING, machine.UploadFinished(), S.WAITING, "upload.completed"),
        (S.UPLOADING, machine.UploadSessionStarted("https://s/x?upload_id=1"), S.UPLOADING,
         "upload.session_started"),
        (S.WAITING, machine.Polled(remote(RemoteStatus.IN_PROGRESS)), S.WAITING, "job.status"),
        (S.WAITING, machine.Polled(remote(RemoteStatus.CREATED)), S.WAITING, "job.status"),
        (S.WAITING, machine.Polled(remote("some_future_status")), S.WAITING, "job.status"),
        (S.WAITING, machine.Polled(remote(RemoteStatus.COMPLETE)), S.DOWNLOADING, "job.status"),
        (S.WAITING, machine.Polled(remote(RemoteStatus.FAILED, "bad file")), S.QUEUED,
         "job.failed"),
        (S.WAITING, machine.Polled(remote(RemoteStatus.EXPIRED)), S.QUEUED, "job.expired"),
        (S.DOWNLOADING, machine.Downloaded(3), S.DELIVERING, "download.completed"),
        (S.DELIVERING, machine.DeliveredAll(), S.DONE, "batch.done"),
    ],
)
def test_decide_happy_and_remote_outcomes(
    state: BatchState, observation: machine.Observation, to_state: BatchState, event: str
) -> None:
    decision = decide(batch(state), observation, NOW, POLICY, rng())
    assert (decision.to_state, decision.event) == (to_state, event)
    assert decision.to_state in ALLOWED[state]


def test_job_created_persists_ids_urls_and_deadlines() -> None:
    job = remote()
    decision = decide(batch(S.CREATING), machine.JobCreated(job), NOW, POLICY, rng())
    assert decision.changes["x_job_id"] == job.id
    assert decision.changes["upload_url"] == job.upload_url
    assert decision.changes["download_expires_at"] == job.download_expires_at


def test_poll_interval_grows_and_is_capped() -> None:
    intervals = [machine.poll_interval(n, POLICY) for n in range(8)]
    assert intervals[:4] == [5, 10, 20, 40]
    assert max(intervals) == 60
    assert intervals == sorted(intervals)


def test_failed_job_on_last_attempt_gives_up_with_the_api_error() -> None:
    decision = decide(batch(S.WAITING, attempt=3),
                      machine.Polled(remote(RemoteStatus.FAILED, "Malformed file")),
                      NOW, POLICY, rng())
    assert decision.to_state is S.FAILED
    assert decision.reject_reason is not None and "Malformed file" in decision.reject_reason


@pytest.mark.parametrize(
    ("state", "error", "to_state", "counted"),
    [
        (S.CREATING, RetryableError("503"), S.CREATING, True),
        (S.CREATING, RateLimited("429", retry_after=100), S.CREATING, False),
        (S.CREATING, ConflictError("409"), S.CREATING, False),
        (S.CREATING, AuthError("401"), S.CREATING, False),
        (S.UPLOADING, RetryableError("reset"), S.UPLOADING, True),
        (S.WAITING, RetryableError("500"), S.WAITING, True),
        (S.DOWNLOADING, IntegrityError("crc"), S.DOWNLOADING, True),
    ],
)
def test_retryable_errors_stay_in_stage_with_a_delay(
    state: BatchState, error: Exception, to_state: BatchState, counted: bool
) -> None:
    decision = decide(batch(state), machine.StepFailed(error), NOW, POLICY, rng())
    assert decision.to_state is to_state
    assert decision.changes["next_attempt_at"] > NOW
    key = "stage_retries" if counted else "stage_waits"
    assert decision.changes[key] == 1


def test_rate_limit_waits_until_reset() -> None:
    decision = decide(batch(S.WAITING), machine.StepFailed(RateLimited("429", retry_after=120)),
                      NOW, POLICY, rng())
    wait = (decision.changes["next_attempt_at"] - NOW).total_seconds()
    assert 120 <= wait <= 124


def test_auth_error_pauses_instead_of_burning_retries() -> None:
    decision = decide(batch(S.CREATING, stage_waits=50), machine.StepFailed(AuthError("401")),
                      NOW, POLICY, rng())
    assert decision.pause and decision.to_state is S.CREATING


# Every transient class, as the adapters raise them (remote/xapi.py, remote/storage.py).
TRANSIENT: dict[str, Exception] = {
    "503": RetryableError("X API get: HTTP 503", http_status=503),
    "500": RetryableError("storage upload: HTTP 500", http_status=500),
    "408": RetryableError("X API create: HTTP 408", http_status=408),
    "connection-refused": RetryableError("ClientConnectorError (refused)"),
    "connection-reset": RetryableError("ServerDisconnectedError"),
    "dns": RetryableError("ClientConnectorDNSError (name not known)"),
    "tls": RetryableError("ClientConnectorCertificateError"),
    "timeout": RetryableError("TimeoutError"),
    "malformed-200": RetryableError("HTTP 200 with a malformed body", http_status=200),
    "corrupt-download": IntegrityError("crc32c mismatch", http_status=200),
    "429": RateLimited("HTTP 429", http_status=429, retry_after=900),
    "409": ConflictError("HTTP 409", http_status=409),
    "401": AuthError("HTTP 401", http_status=401),
    "403": AuthError("HTTP 403", http_status=403),
    "disk-full": OSError(28, "No space left on device"),
}
REMOTE_STAGES = [S.CREATING, S.UPLOADING, S.WAITING, S.DOWNLOADING]


@pytest.mark.parametrize("state", REMOTE_STAGES)
@pytest.mark.parametrize("kind", list(TRANSIENT))
def test_transient_errors_are_retried_in_place_forever_in_every_stage(
    state: BatchState, kind: str
) -> None:
    """A day-long outage: thousands of failures in a row, past every budget and on the last
    remote attempt, still only wait (capped) and try the same step again."""
    error = TRANSIENT[kind]
    worn = batch(state, attempt=POLICY.max_attempts, stage_retries=5000, stage_waits=5000)
    decision = decide(worn, machine.StepFailed(error), NOW, POLICY, rng())
    assert decision.to_state is state
    assert decision.reject_reason is None
    assert "x_job_id" not in decision.changes and "attempt" not in decision.changes
    wait = (decision.changes["next_attempt_at"] - NOW).total_seconds()
    cap = POLICY.retry.backoff_max_s + (900 + 3 if kind == "429" else 0)
    assert 0 < wait <= cap


def test_delivery_trouble_is_retried_forever_too() -> None:
    decision = decide(batch(S.DELIVERING, stage_waits=5000),
                      machine.StepFailed(TRANSIENT["disk-full"]), NOW, POLICY, rng())
    assert decision.to_state is S.DELIVERING and decision.reject_reason is None


@pytest.mark.parametrize("state", REMOTE_STAGES)
def test_the_failure_at_max_stage_retries_is_logged_as_an_incident_once(
    state: BatchState,
) -> None:
    """max_stage_retries is where a warning becomes an error line, not a give-up."""
    error = machine.StepFailed(TRANSIENT["503"])
    levels = []
    for done in range(6):  # POLICY: max_stage_retries=3
        decision = decide(batch(state, stage_retries=done), error, NOW, POLICY, rng())
        assert decision.to_state is state and decision.event == "step.retry"
        levels.append((decision.level, decision.detail.get("incident", False)))
    assert levels == [("warning", False), ("warning", False), ("error", True),
                      ("warning", False), ("warning", False), ("warning", False)]


@pytest.mark.parametrize("state", [S.UPLOADING, S.WAITING, S.DOWNLOADING])
@pytest.mark.parametrize(
    "error",
    [PermanentError("HTTP 400", http_status=400), PermanentError("HTTP 404", http_status=404),
     UploadWindowClosed("storage upload: HTTP 400 ExpiredToken", http_status=400),
     PermanentError("storage: HTTP 403 SignatureDoesNotMatch", http_status=403)],
)
def test_a_permanent_answer_after_create_costs_a_remote_job(
    state: BatchState, error: Exception
) -> None:
    decision = decide(batch(state), machine.StepFailed(error), NOW, POLICY, rng())
    assert decision.to_state is S.QUEUED and decision.changes["x_job_id"] is None
    last = decide(batch(state, attempt=POLICY.max_attempts), machine.StepFailed(error), NOW,
                  POLICY, rng())
    assert last.to_state is S.FAILED and last.reject_reason is not None


@pytest.mark.parametrize(
    ("state", "now", "error_type", "level"),
    [
        (S.UPLOADING, NOW + timedelta(minutes=14, seconds=1), UploadDeadlinePassed, "warning"),
        (S.WAITING, NOW + timedelta(days=7) - timedelta(minutes=59), DownloadDeadlinePassed,
         "error"),
        (S.DOWNLOADING, NOW + timedelta(days=7) - timedelta(minutes=59), DownloadDeadlinePassed,
         "error"),
    ],
)
def test_a_deadline_passed_during_an_outage_gets_a_new_job_even_on_the_last_attempt(
    state: BatchState, now: datetime, error_type: type[Exception], level: str
) -> None:
    """Our own deadline is not a permanent answer: the batch is resubmitted, never rejected."""
    failing = batch(state, attempt=POLICY.max_attempts, stage_retries=400)
    step = plan(failing, now, POLICY)
    assert isinstance(step, machine.Abandon) and type(step.error) is error_type
    decision = decide(failing, machine.StepFailed(step.error), now, POLICY, rng())
    assert decision.to_state is S.QUEUED and decision.reject_reason is None
    assert decision.level == level and decision.event == "job.abandoned"
    assert decision.changes["x_job_id"] is None  # the next StartAttempt creates a new job


@pytest.mark.parametrize("error", [UploadWindowClosed("late"), DownloadExpired("late"),
                                   RemoteJobEnded("expired before its upload")])
def test_closed_windows_lead_to_a_new_job(error: Exception) -> None:
    state = S.UPLOADING if isinstance(error, UploadWindowClosed) else S.DOWNLOADING
    decision = decide(batch(state), machine.StepFailed(error), NOW, POLICY, rng())
    assert decision.to_state is S.QUEUED
    last = decide(batch(state, attempt=3), machine.StepFailed(error), NOW, POLICY, rng())
    assert last.to_state is S.FAILED


def test_permanent_error_on_create_fails_the_batch() -> None:
    decision = decide(batch(S.CREATING), machine.StepFailed(PermanentError("400")),
                      NOW, POLICY, rng())
    assert decision.to_state is S.FAILED


def test_delivery_trouble_waits_and_retries_forever() -> None:
    decision = decide(batch(S.DELIVERING, stage_waits=40),
                      machine.StepFailed(PermissionError("outbox not writable")),
                      NOW, POLICY, rng())
    assert decision.to_state is S.DELIVERING
    assert decision.changes["next_attempt_at"] - NOW <= timedelta(seconds=300)


@pytest.mark.parametrize("error", [DownloadExpired("gone"), UploadWindowClosed("closed")])
def test_a_remote_deadline_during_delivery_keeps_the_local_results(error: Exception) -> None:
    """Found by the state property test: the results are on our disk by then, and
    DELIVERING -> QUEUED is not in ALLOWED (the store would refuse it as stale)."""
    decision = decide(batch(S.DELIVERING), machine.StepFailed(error), NOW, POLICY, rng())
    assert decision.to_state is S.DELIVERING
    assert decision.to_state in machine.ALLOWED[S.DELIVERING]


def test_observation_in_wrong_state_is_a_bug() -> None:
    with pytest.raises(ValueError, match="not valid"):
        decide(batch(S.QUEUED), machine.UploadFinished(), NOW, POLICY, rng())


@pytest.mark.parametrize(
    ("error", "counted_so_far", "expected"),
    [
        (RetryableError("x"), 0, RetryAt),
        (RetryableError("x"), 3, RetryAt),
        (RetryableError("x"), 10**6, RetryAt),
        (IntegrityError("x"), 10**6, RetryAt),
        (AuthError("x"), 10**6, RetryAt),
        (PermanentError("x"), 0, GiveUp),
        (ConflictError("x"), 99, RetryAt),
        (RateLimited("x", retry_after=5), 99, RetryAt),
        (ValueError("bug"), 0, GiveUp),
    ],
)
def test_retry_classification(error: Exception, counted_so_far: int, expected: type) -> None:
    verdict = retry_decision(error, counted_so_far=counted_so_far, waits_so_far=0,
                             policy=POLICY.retry, rng=rng())
    assert isinstance(verdict, expected)


def test_backoff_is_capped_and_jittered() -> None:
    r = random.Random(3)
    delays = [retry_decision(RetryableError("x"), counted_so_far=0, waits_so_far=n,
                             policy=POLICY.retry, rng=r) for n in range(20)]
    values = [d.delay_s for d in delays if isinstance(d, RetryAt)]
    assert max(values) <= 300
    assert values[0] <= 2
    assert len(set(values)) == len(values)  # jitter: no two restarts wake together


def test_poll_interval_stays_within_a_tenth_of_the_job_age() -> None:
    slow = Policy(poll_initial_s=5, poll_max_s=60, poll_factor=3, poll_min_spacing_s=0)
    assert machine.poll_interval(5, slow) == 60
    assert machine.poll_interval(5, slow, age_s=100) == 10  # 10% of 100 s
    assert machine.poll_interval(5, slow, age_s=10) == 5  # never below the first interval
    assert machine.poll_interval(5, slow, age_s=6000) == 60  # and never above the cap
    uploaded = NOW - timedelta(seconds=200)
    decision = decide(batch(S.WAITING, poll_count=9, uploaded_at=uploaded),
                      machine.Polled(remote(RemoteStatus.IN_PROGRESS)), NOW, slow, rng())
    assert decision.changes["next_attempt_at"] - NOW == timedelta(seconds=20)


@pytest.mark.parametrize("state", [S.UPLOADING, S.DOWNLOADING])
def test_local_disk_trouble_waits_and_never_throws_away_a_remote_job(state: BatchState) -> None:
    full = OSError(28, "No space left on device")
    decision = decide(batch(state, stage_retries=3, stage_waits=7), machine.StepFailed(full),
                      NOW, POLICY, rng())
    assert decision.to_state is state
    assert decision.changes["stage_waits"] == 8
    assert "x_job_id" not in decision.changes  # the remote job is kept


def test_polling_errors_keep_polling_until_the_download_deadline() -> None:
    decision = decide(batch(S.WAITING, stage_retries=3), machine.StepFailed(RetryableError("x")),
                      NOW, POLICY, rng())
    assert decision.to_state is S.WAITING
    assert decision.changes["next_attempt_at"] - NOW <= timedelta(seconds=300)
    # ...and right up to it: a minute before the deadline the poll is still due.
    late = NOW + timedelta(days=7) - timedelta(minutes=61)
    assert plan(batch(S.WAITING), late, POLICY) == machine.Poll()


def test_backoff_after_thousands_of_failures_stays_within_the_cap() -> None:
    r = random.Random(5)
    delays = [retry_decision(RetryableError("x"), counted_so_far=n, waits_so_far=0,
                             policy=POLICY.retry, rng=r) for n in range(0, 5000, 7)]
    values = [d.delay_s for d in delays if isinstance(d, RetryAt)]
    assert len(values) == len(delays)
    assert max(values) <= 300 and min(values[10:]) >= 150  # jittered in [cap/2, cap]


def test_poll_spacing_never_drops_below_what_the_rate_limit_sustains() -> None:
    policy = Policy(poll_initial_s=5, poll_max_s=60, poll_factor=1.5)  # default 900/140 s
    assert machine.poll_interval(0, policy, age_s=1) == 5  # the first poll stays quick
    later = machine.poll_interval(3, policy, age_s=20)
    assert later == pytest.approx(900 / 140)  # not 5 s: a stream of short jobs stays < 150


def test_a_job_abandoned_before_its_upload_is_waited_out_before_the_next_post() -> None:
    """Otherwise the next POST meets a 409 from our own job, still `created` in its window."""
    uploading = batch(S.UPLOADING)  # window ends NOW + 15 min
    decision = decide(uploading, machine.StepFailed(UploadWindowClosed("403")), NOW, POLICY,
                      rng())
    assert decision.to_state is S.QUEUED
    assert decision.changes["next_attempt_at"] == uploading.upload_expires_at + timedelta(
        seconds=machine.OWN_JOB_SLACK_S)
    # A job that failed remotely is not active: the next one may start at once.
    failed = decide(batch(S.WAITING), machine.Polled(remote(RemoteStatus.FAILED, "x")), NOW,
                    POLICY, rng())
    assert failed.changes["next_attempt_at"] - NOW <= timedelta(seconds=2)
