"""Resilience (issue 4, parts 1-5): every fault the sandbox can script, driven through the real
daemon (no mocks of our own code); each test asserts what a user sees: results equal to the
sandbox's ground truth, or a reasoned rejection in outbox/rejected/, the log lines, the remote
jobs, the request counts.

Under the outage model (issue 10, README "What happens when things fail") transient failures
(5xx, resets, timeouts) never reject an input nor throw away a job, however many there are:
past `max_stage_retries` the daemon only logs an incident and keeps retrying. The scenarios
that used to end in a rejection or a new job "past the budget" are kept, with that outcome.
Hours-long faults on a warped clock are in tests/test_long_outages.py.

Fault matrix as tested (fault -> stage -> outcome):

| fault (how scripted)                 | stage        | outcome (asserted)                         |
|--------------------------------------|--------------|--------------------------------------------|
| 429 + x-rate-limit-reset on create;  | creating,    | waits past the reset: 1 warning line with  |
| 429 on get; 429 on list (after a     | waiting,     | resume_at (UTC), no request before it, not |
| create 500); 429 + Retry-After on    | adoption,    | counted; 1 job, exact results              |
| upload                               | uploading    |                                            |
| request budget at the reserve (5 per | waiting      | waits for the next window, never a 429;    |
| 3 s window, reserve 2)               |              | xapi.rate_wait once per wait, resume_at in |
|                                      |              | UTC (local TZ +05:30)                      |
| 500/503 x3 on create, get, upload,   | each         | 3 counted retries with backoff, then       |
| download; list 500 x2 (adoption      |              | success; 1 job, exact results              |
| check)                               |              |                                            |
| create 500 past max_stage_retries    | creating     | keeps retrying (one incident error line at |
|                                      |              | max_stage_retries), then succeeds when the |
|                                      |              | fault ends; nothing rejected; 1 job        |
| get 503 past max_stage_retries       | waiting      | keeps retrying within the backoff cap,     |
|                                      |              | then succeeds; 1 job, exact results        |
| download 503 past max_stage_retries  | downloading  | keeps retrying, then succeeds; the job is  |
|                                      |              | kept (no job.abandoned); exact results     |
| upload 503 past max_stage_retries    | uploading    | keeps retrying, then succeeds; the job is  |
|                                      |              | kept (no job.abandoned); exact results     |
| connection reset on create           | creating     | adoption check, new POST; 1 job            |
| create answer truncated (job made,   | creating     | adopted by name (job.adopted); 1 job       |
| reply lost)                          |              |                                            |
| reset x2 on get, list, download; get | each         | retried; 1 job, exact results              |
| answer truncated                     |              |                                            |
| upload reset mid-body (after 20000   | uploading    | sent again; the storage holds 1 whole      |
| bytes)                               |              | upload                                     |
| download body truncated after 5000   | downloading  | Range resume (206), crc32c checked, exact  |
| bytes                                |              | results                                    |
| slow answers (0.6 s), read timeout 5 | each         | waited for, no retry                       |
| s (create, upload, get, download)    |              |                                            |
| slow answers (1.5 s), read timeout   | each         | 1 retry each, no second job                |
| 0.5 s (create, upload, get,          |              |                                            |
| download)                            |              |                                            |
| remote job fails once                | waiting      | job.failed warning, new job; the manifest  |
|                                      |              | lists both, the first with the API's error |
| remote job fails max_attempts times  | waiting      | both rejected: stage, attempts, job_error, |
| (2 files packed in 1 batch)          |              | x_job_ids, timestamps                      |
| job expired while the daemon was     | uploading    | GET says expired -> new job                |
| down                                 |              |                                            |
| upload window closes before the      | uploading    | 400 ExpiredToken -> new job                |
| upload lands (slow)                  |              |                                            |
| upload window closes mid-upload      | uploading    | 400 ExpiredToken -> new job                |
| (reset, late retry)                  |              |                                            |
| upload window passed while the       | uploading    | the stale URL is not tried -> new job      |
| daemon was down                      |              |                                            |
| resumable: reset mid-chunk           | uploading    | continues from the stored offset; 1        |
|                                      |              | session                                    |
| resumable: SIGKILL mid-chunk,        | uploading    | the stored session goes on; only the       |
| restart                              |              | missing bytes are sent                     |
| resumable: the session is cancelled  | uploading    | upload.session_gone warning, a new         |
| at the storage (then 404) across a   |              | session, 1 job                             |
| restart                              |              |                                            |
| resumable: the window ends mid-      | uploading    | the session completes (GCS rule); 1 job    |
| session                              |              |                                            |
| download link expired (sandbox clock | downloading  | error line, batch resubmitted, exact       |
| +8 days)                             |              | results                                    |
| download deadline (short window)     | waiting      | warning at the lead time, error at the     |
|                                      |              | deadline, resubmitted; old job never       |
|                                      |              | fetched                                    |
| per-type lanes: one type's upload    | uploading    | the other type's results are fetched and   |
| hangs                                |              | delivered meanwhile                        |
| 401 (wrong token)                    | creating     | 1 error line, uncounted retries at the     |
|                                      |              | slowest backoff, queue kept; restart with  |
|                                      |              | the right token -> delivered               |
| 401 while polling (token revoked,    | waiting      | 1 error line, the job is kept, polling     |
| then reinstated at the API)          |              | resumes by itself; 1 job                   |
| 403 SignatureDoesNotMatch (storage   | uploading    | job abandoned, new job (after the 409      |
| key rotated)                         |              | wait)                                      |
| 409 (another client's job is active) | creating     | uncounted waits; proceeds once that job is |
|                                      |              | done                                       |
| restart with 3 counted retries       | downloading  | the 3 are kept: the incident line comes at |
|                                      |              | the scripted failure; then succeeds, 1 job |
| restart after remote attempt 2       | waiting      | attempts kept: rejected at max_attempts    |
| job failed on the last attempt, then | -            | delivered; no --type needed                |
| `requeue FILE` (daemon running)      |              |                                            |

Not producible with the sandbox (left to the unit tests): a crc32c/length mismatch on download,
a poll that sees `expired` after an upload.
"""

from __future__ import annotations

import itertools
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl
from daemon_helpers import TOKEN, db_rows, drop, load, make_ids, outcome, read_results, wait_for
from resilience_helpers import (
    SECRET_MARKERS,
    LogTap,
    daemon,
    error_doc,
    manifest,
    requests_to,
    settled,
    spawn_daemon,
    spool_empty,
    statuses,
    tap_logs,
    when,
    write_config_ex,
)

from orchestrator.config import Config
from orchestrator.sandbox import Sandbox
from orchestrator.sandbox.signing import Signer


@pytest.fixture
def logs() -> Iterator[LogTap]:
    """The daemon's log lines, rendered by its production chain; none may hold a secret."""
    with tap_logs() as tap:
        yield tap
    leaked = [marker for marker in SECRET_MARKERS if marker in tap.text]
    assert not leaked, f"secrets in the log: {leaked}"


def assert_exact(workdir: Path, sb: Sandbox, job_type: str, name: str, ids: list[str]) -> None:
    assert outcome(workdir, job_type, name) == "delivered", f"{name} was not delivered"
    assert read_results(workdir, job_type, Path(name).stem) == sb.expected_results(job_type, ids)


async def deliver(
    workdir: Path, sb: Sandbox, config: Config, job_type: str, name: str, ids: list[str],
    faults: Sequence[tuple[str, str, dict[str, Any]]] = (),
) -> None:
    """Run the daemon until the dropped `name` is settled; it must be delivered, exactly.
    `faults` (endpoint, kind, options) are added once it is ready, after its start-up probe
    (one `list` call), and that probe is left out of the sandbox's request log."""
    async with daemon(config):
        sb.request_log.clear()
        for where, kind, options in faults:
            sb.faults.add(where, kind, **options)
        drop(workdir, job_type, name, ids)
        await wait_for(lambda: settled(workdir, job_type, name), what="delivery")
    assert_exact(workdir, sb, job_type, name, ids)


def warnings_about(logs: LogTap, http_status: int) -> list[dict[str, Any]]:
    return [r for r in logs.daemon_records()
            if r.get("level") in ("warning", "error") and r.get("http_status") == http_status]


def request_times(logs: LogTap, endpoint: str, http_status: int | None = None) -> list[datetime]:
    """When the daemon saw answers from `endpoint` (its own debug lines)."""
    return [when(r) for r in logs.daemon_records()
            if r.get("event") in ("xapi.request", "storage.request")
            and r.get("endpoint") == endpoint
            and (http_status is None or r.get("http_status") == http_status)]


def delivered_as(workdir: Path, job_type: str, name: str) -> list[str]:
    """Output stems whose manifest names `name` as its input."""
    folder = workdir / "outbox" / job_type
    if not folder.exists():
        return []
    return [p.name.removesuffix(".manifest.json") for p in sorted(folder.glob("*.manifest.json"))
            if manifest(workdir, job_type, p.name.removesuffix(".manifest.json"))["input"]["file"]
            == name]


def sandbox_names(sb: Sandbox) -> list[tuple[str | None, str, int]]:
    return [(job["name"], job["status"], job["uploaded_ids"]) for job in sb.jobs()]


# ---- 1. rate limits -----------------------------------------------------------------------

RATE_LIMITED = {
    "create": [],
    "get": [],
    "list": [("create", "500")],  # a failed create makes the next attempt list first (adoption)
    "upload": [],                 # storage: 429 with Retry-After
}


@pytest.mark.parametrize("endpoint", list(RATE_LIMITED))
async def test_a_429_waits_until_the_reset_logs_once_and_never_spins(
    tmp_path: Path, sandbox: Sandbox, logs: LogTap, endpoint: str
) -> None:
    config = load(write_config_ex(tmp_path, sandbox.base_url))
    ids = make_ids(1, 300)
    faults: list[tuple[str, str, dict[str, Any]]] = [
        (before, kind, {}) for before, kind in RATE_LIMITED[endpoint]]
    faults.append((endpoint, "429", {"retry_after": 1}))
    await deliver(tmp_path, sandbox, config, "tweets", "ids.txt", ids, faults)
    assert len(sandbox.jobs()) == 1
    seen = statuses(sandbox, endpoint)
    assert seen.count(429) == 1 and seen[seen.index(429) + 1] == 200, seen
    # One line about the wait, not one per second or per retry, saying when it resumes.
    [line] = warnings_about(logs, 429)
    resume = datetime.fromisoformat(str(line.get("resume_at")).replace("Z", "+00:00"))
    assert resume.tzinfo is not None and resume > when(line), line
    # Not one request to that endpoint before the reset (at least 1 s away, see retry_after).
    limited = request_times(logs, endpoint, 429)[0]
    following = [t for t in request_times(logs, endpoint) if t > limited]
    assert following and (following[0] - limited).total_seconds() >= 0.95


def _reserve_config(tmp_path: Path, sb: Sandbox) -> Path:
    # 5 requests per 3-second window, 2 of them left to other clients of the app.
    sb.configure(rate_limit=5, rate_window_s=3, processing_time_s=2.5)
    return write_config_ex(tmp_path, sb.base_url, extra={"poll": {"rate_reserve": 2}})


@pytest.fixture
def local_time_not_utc() -> Iterator[None]:
    """Run with a local time zone 5:30 ahead of UTC (no DST), so a log time written in local
    time instead of UTC shows."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Kolkata"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


@pytest.mark.usefixtures("local_time_not_utc")
async def test_the_poller_leaves_the_reserve_to_other_clients(
    tmp_path: Path, sandbox: Sandbox, logs: LogTap
) -> None:
    config = load(_reserve_config(tmp_path, sandbox))
    ids = make_ids(2, 100)
    await deliver(tmp_path, sandbox, config, "users", "ids.txt", ids)
    assert 429 not in [status for _m, _p, status in sandbox.request_log]
    waits = logs.events("xapi.rate_wait")
    assert waits and all(w["endpoint"] == "get" for w in waits)
    for wait in waits:  # resume_at is UTC, like every other time in the log
        resume = datetime.fromisoformat(wait["resume_at"].replace("Z", "+00:00"))
        expected = when(wait) + timedelta(seconds=wait["wait_s"])
        assert resume.tzinfo is not None and abs((resume - expected).total_seconds()) < 5, wait
    # Each wait is logged once: between two wait lines there is always a request.
    lines = [r["event"] for r in logs.daemon_records()
             if r["event"] == "xapi.rate_wait"
             or (r["event"] == "xapi.request" and r.get("endpoint") == "get")]
    assert all(not (a == b == "xapi.rate_wait") for a, b in itertools.pairwise(lines))


# ---- 2. retries: 5xx bursts, dropped connections, slow answers ------------------------------

BURSTS = {
    "create-500x3": ([("create", "500", 3)], "create"),
    "get-503x3": ([("get", "503", 3)], "get"),
    "list-500x2": ([("create", "503", 1), ("list", "500", 2)], "list"),
    "upload-503x3": ([("upload", "503", 3)], "upload"),
    "download-500x3": ([("download", "500", 3)], "download"),
}


@pytest.mark.parametrize("case", list(BURSTS))
async def test_a_5xx_burst_is_retried_with_counted_backoff(
    tmp_path: Path, sandbox: Sandbox, logs: LogTap, case: str
) -> None:
    faults, endpoint = BURSTS[case]
    config = load(write_config_ex(tmp_path, sandbox.base_url))
    ids = make_ids(3, 2000)
    await deliver(tmp_path, sandbox, config, "tweets", "ids.txt", ids,
                  [(where, kind, {"count": count}) for where, kind, count in faults])
    assert len(sandbox.jobs()) == 1
    burst = next(count for where, _kind, count in faults if where == endpoint)
    seen = statuses(sandbox, endpoint)
    assert seen[:burst] == [int(faults[-1][1])] * burst and seen[burst] == 200, seen
    retries = logs.events("step.retry")
    assert len(retries) == sum(count for _w, _k, count in faults)
    # Each failure counted against the stage, in order, with a growing (capped) backoff.
    assert [r["attempt"] for r in retries] == list(range(1, len(retries) + 1))
    delays = [r["retry_in_s"] for r in retries]
    assert delays == sorted(delays) and max(delays) <= 0.5, delays


DROPS: dict[str, tuple[list[tuple[str, str, int, dict[str, Any]]], str, list[int]]] = {
    # POST is not idempotent: aiohttp does not repeat it, one reset is seen at once.
    "create-reset": ([("create", "reset", 1, {})], "create", [0, 200]),
    # The job is created but its answer is cut: the next attempt adopts it by name.
    "create-truncated": ([("create", "truncate", 1, {})], "create", [200]),
    # GET/PUT are repeated once silently by aiohttp: two resets make one visible failure.
    "get-reset": ([("get", "reset", 2, {})], "get", [0, 0, 200]),
    "list-reset": ([("create", "503", 1, {}), ("list", "reset", 2, {})], "list", [0, 0, 200]),
    "get-truncated": ([("get", "truncate", 1, {})], "get", [200, 200]),
    "upload-reset-mid-body": ([("upload", "reset", 1, {"after_bytes": 20000})], "upload",
                              [0, 200]),
    "download-reset": ([("download", "reset", 2, {})], "download", [0, 0, 200]),
    "download-truncated": ([("download", "truncate", 1, {"after_bytes": 5000})], "download",
                           [200, 206]),
}


@pytest.mark.parametrize("case", list(DROPS))
async def test_a_dropped_connection_is_retried_without_a_second_job(
    tmp_path: Path, sandbox: Sandbox, logs: LogTap, case: str
) -> None:
    faults, endpoint, expected = DROPS[case]
    config = load(write_config_ex(tmp_path, sandbox.base_url))
    ids = make_ids(4, 3000)
    await deliver(tmp_path, sandbox, config, "users", "ids.txt", ids,
                  [(where, kind, {"count": count, **options})
                   for where, kind, count, options in faults])
    [job] = sandbox.jobs()
    assert job["uploaded_ids"] == len(ids) and job["status"] == "complete"  # one whole upload
    seen = statuses(sandbox, endpoint)
    assert seen[:len(expected)] == expected, seen  # (polls go on until the job is complete)
    assert len(logs.events("step.retry")) == len(faults)  # the daemon saw each fault once
    if case == "create-truncated":
        assert [r["x_job_id"] for r in logs.events("job.adopted")] == [job["id"]]
    if case == "download-truncated":
        [report] = logs.events("download.transferred")
        assert report["resumed_from"] == 5000 and report["crc32c_checked"] is True


def slow_answers(workdir: Path, sb: Sandbox, *, read_timeout_s: float, delay_s: float) -> Config:
    """Every endpoint answers once `delay_s` late; the daemon's read timeout is `read_timeout_s`."""
    config = load(write_config_ex(workdir, sb.base_url,
                                  extra={"api": {"read_timeout_s": read_timeout_s}}))
    for endpoint in ("create", "upload", "get", "download"):
        sb.faults.add(endpoint, "slow", delay=delay_s)
    return config


async def test_slow_answers_within_the_read_timeout_are_just_waited_for(
    tmp_path: Path, sandbox: Sandbox, logs: LogTap
) -> None:
    config = slow_answers(tmp_path, sandbox, read_timeout_s=5.0, delay_s=0.6)
    ids = make_ids(5, 500)
    await deliver(tmp_path, sandbox, config, "tweets", "ids.txt", ids)
    assert logs.events("step.retry") == []
    assert len(sandbox.jobs()) == 1


async def test_answers_slower_than_the_read_timeout_are_retried_without_a_second_job(
    tmp_path: Path, sandbox: Sandbox, logs: LogTap
) -> None:
    config = slow_answers(tmp_path, sandbox, read_timeout_s=0.5, delay_s=1.5)
    ids = make_ids(6, 500)
    await deliver(tmp_path, sandbox, config, "tweets", "ids.txt", ids)
    assert [r["stage"] for r in logs.events("step.retry")] == [
        "creating", "uploading", "waiting", "downloading"]
    assert all(r["error"] == "RetryableError" for r in logs.events("step.retry"))
    assert len(sandbox.jobs()) == 1


# ---- 2/5. transient failures past max_stage_retries: an incident, never a give-up ----------


def nothing_rejected(workdir: Path) -> bool:
    folder = workdir / "outbox" / "rejected"
    return not folder.exists() or not any(folder.iterdir())


def incident_lines(logs: LogTap) -> list[dict[str, Any]]:
    return [r for r in logs.events("step.retry") if r.get("incident")]


async def test_create_failing_past_max_stage_retries_keeps_retrying_then_succeeds(
    tmp_path: Path, sandbox: Sandbox, logs: LogTap
) -> None:
    config = load(write_config_ex(tmp_path, sandbox.base_url, max_stage_retries=2))
    ids = make_ids(7, 50)
    sandbox.faults.add("create", "500", count=5)
    await deliver(tmp_path, sandbox, config, "tweets", "ids.txt", ids)
    assert nothing_rejected(tmp_path)
    assert statuses(sandbox, "create") == [500, 500, 500, 500, 500, 200]
    assert len(sandbox.jobs()) == 1
    retries = logs.events("step.retry")
    assert [(r["stage"], r["http_status"]) for r in retries] == [("creating", 500)] * 5
    # The 2nd failure in a row (max_stage_retries) is the one error line; the rest warn.
    assert [r["level"] for r in retries] == ["warning", "error", "warning", "warning", "warning"]
    assert [r["attempt"] for r in incident_lines(logs)] == [2]
    assert [r["event"] for r in logs.daemon_records() if r["level"] == "error"] == ["step.retry"]
    assert logs.events("batch.gave_up") == [] and logs.events("input.rejected") == []


async def test_polling_failing_past_max_stage_retries_keeps_the_job_and_keeps_asking(
    tmp_path: Path, sandbox: Sandbox, logs: LogTap
) -> None:
    config = load(write_config_ex(tmp_path, sandbox.base_url, max_stage_retries=2))
    ids = make_ids(8, 400)
    sandbox.faults.add("get", "503", count=3)
    async with daemon(config):
        drop(tmp_path, "users", "ids.txt", ids)
        await wait_for(lambda: settled(tmp_path, "users", "ids.txt"), what="delivery")
    # The job may still be running: it is not thrown away (its successor would meet a 409
    # from it); the daemon asks again within the backoff cap until the fault ends.
    assert_exact(tmp_path, sandbox, "users", "ids.txt", ids)
    assert len(sandbox.jobs()) == 1 and logs.events("job.abandoned") == []
    retries = logs.events("step.retry")
    assert [r["http_status"] for r in retries] == [503, 503, 503]
    assert all(r["retry_in_s"] <= 0.5 for r in retries)  # backoff_max_s of the test config
    assert [r["attempt"] for r in incident_lines(logs)] == [2]


@pytest.mark.parametrize("endpoint", ["download", "upload"])
async def test_a_stage_failing_past_max_stage_retries_keeps_its_job_and_succeeds(
    tmp_path: Path, sandbox: Sandbox, logs: LogTap, endpoint: str
) -> None:
    config = load(write_config_ex(tmp_path, sandbox.base_url, max_stage_retries=2))
    ids = make_ids(8, 400)
    sandbox.faults.add(endpoint, "503", count=5)
    await deliver(tmp_path, sandbox, config, "users", "ids.txt", ids)
    assert nothing_rejected(tmp_path)
    [job] = sandbox.jobs()
    assert job["status"] == "complete" and job["name"].endswith("-1")
    assert logs.events("job.abandoned") == []
    assert statuses(sandbox, endpoint)[:6] == [503, 503, 503, 503, 503, 200]
    [incident] = incident_lines(logs)
    assert incident["stage"] == ("downloading" if endpoint == "download" else "uploading")
    assert incident["level"] == "error" and incident["http_status"] == 503
    rows = db_rows(tmp_path, "SELECT x_job_id, attempt, final_status FROM remote_jobs")
    assert [r["x_job_id"] for r in rows] == [job["id"]]
    listed = manifest(tmp_path, "users", "ids")["jobs"]
    assert [j["x_job_id"] for j in listed] == [job["id"]]


# ---- remote jobs that fail or expire --------------------------------------------------------


async def test_a_failed_job_is_replaced_by_a_new_one(
    tmp_path: Path, sandbox: Sandbox, logs: LogTap
) -> None:
    config = load(write_config_ex(tmp_path, sandbox.base_url))
    ids = make_ids(9, 300)
    sandbox.faults.fail_next_jobs(1, error="Internal error")
    await deliver(tmp_path, sandbox, config, "tweets", "ids.txt", ids)
    assert [(s, n) for _name, s, n in sandbox_names(sandbox)] == [("failed", 300),
                                                                ("complete", 300)]
    [failed] = logs.events("job.failed")
    assert failed["level"] == "warning" and failed["job_error"] == "Internal error"
    jobs = manifest(tmp_path, "tweets", "ids")["jobs"]
    assert [j["status"] for j in jobs] == ["failed", "complete"]
    assert jobs[0]["error"] == "Internal error"


async def test_after_max_attempts_every_input_of_the_batch_is_rejected_with_the_job_error(
    tmp_path: Path, sandbox: Sandbox, logs: LogTap
) -> None:
    # Both files are there at start and the scheduler waits a moment for company: one job.
    config = load(write_config_ex(tmp_path, sandbox.base_url, max_attempts=2, pack_wait_s=1.0))
    first, second = make_ids(10, 30), make_ids(11, 40)
    drop(tmp_path, "tweets", "first.txt", first)
    drop(tmp_path, "tweets", "second.txt", second)
    sandbox.faults.fail_next_jobs(2, error="Internal error")
    async with daemon(config):
        await wait_for(lambda: settled(tmp_path, "tweets", "first.txt", "second.txt"),
                       what="two rejections")

    jobs = sandbox.jobs()
    assert [j["status"] for j in jobs] == ["failed", "failed"]
    assert all(j["uploaded_ids"] == 70 for j in jobs)
    for name, ids in (("first.txt", first), ("second.txt", second)):
        assert outcome(tmp_path, "tweets", name) == "rejected"
        assert (tmp_path / "outbox" / "rejected" / name).read_text() == "".join(
            f"{i}\n" for i in ids)
        doc = error_doc(tmp_path, name)
        assert doc["stage"] == "waiting" and doc["attempts"] == 2
        assert doc["job_error"] == "Internal error"
        assert doc["x_job_ids"] == [j["id"] for j in jobs]
        assert "gave up after 2" in doc["message"]
        assert doc["gave_up_at"] and doc["batch_created_at"] and doc["rejected_at"]
    assert len(logs.events("batch.gave_up", level="error")) == 1
    assert not (tmp_path / "outbox" / "tweets").exists() or not any(
        (tmp_path / "outbox" / "tweets").iterdir())


async def test_a_job_that_expired_while_the_daemon_was_down_is_replaced(
    tmp_path: Path, sandbox: Sandbox, logs: LogTap
) -> None:
    config = load(write_config_ex(tmp_path, sandbox.base_url))
    ids = make_ids(12, 300)
    sandbox.faults.add("upload", "slow", delay=60)  # hold the upload until we cut it
    async with daemon(config, crash=True):
        drop(tmp_path, "tweets", "ids.txt", ids)
        await wait_for(lambda: not sandbox.faults.pending(), what="the upload in flight")
    sandbox.clock.advance(901)  # the job was never uploaded: it expires
    assert [s for _n, s, _u in sandbox_names(sandbox)] == ["expired"]
    async with daemon(config):
        await wait_for(lambda: settled(tmp_path, "tweets", "ids.txt"), what="delivery")

    assert_exact(tmp_path, sandbox, "tweets", "ids.txt", ids)
    assert [(s, n) for _name, s, n in sandbox_names(sandbox)] == [("expired", 0),
                                                                ("complete", 300)]
    [abandoned] = logs.events("job.abandoned")
    assert abandoned["error"] == "RemoteJobEnded" and "expired" in abandoned["message"]


# ---- 3. the upload window -----------------------------------------------------------------


async def test_a_window_that_closes_while_the_upload_waits_leads_to_a_new_job(
    tmp_path: Path, sandbox: Sandbox, logs: LogTap
) -> None:
    config = load(write_config_ex(tmp_path, sandbox.base_url, upload_margin_s=0))
    ids = make_ids(13, 300)
    sandbox.configure(upload_window_s=2)
    sandbox.faults.add("upload", "slow", delay=2.5)  # reaches the storage after the window
    await deliver(tmp_path, sandbox, config, "tweets", "ids.txt", ids)
    assert [(s, n) for _name, s, n in sandbox_names(sandbox)] == [("expired", 0),
                                                                ("complete", 300)]
    assert statuses(sandbox, "upload") == [400, 200]  # GCS ExpiredToken, then the new job
    [abandoned] = logs.events("job.abandoned")
    assert abandoned["error"] == "UploadWindowClosed" and abandoned["level"] == "warning"


async def test_a_window_that_closes_mid_upload_leads_to_a_new_job(
    tmp_path: Path, sandbox: Sandbox, logs: LogTap
) -> None:
    config = load(write_config_ex(tmp_path, sandbox.base_url, upload_margin_s=0))
    ids = make_ids(14, 5000)
    sandbox.configure(upload_window_s=2)
    sandbox.faults.add("upload", "reset", after_bytes=30000)  # cut mid-body...
    sandbox.faults.add("upload", "slow", delay=2.5)  # ...and the retry arrives too late
    await deliver(tmp_path, sandbox, config, "tweets", "ids.txt", ids)
    assert [(s, n) for _name, s, n in sandbox_names(sandbox)] == [("expired", 0),
                                                                ("complete", 5000)]
    assert statuses(sandbox, "upload") == [0, 400, 200]


async def test_a_window_that_passed_while_the_daemon_was_down_is_not_used(
    tmp_path: Path, sandbox: Sandbox, logs: LogTap
) -> None:
    config = load(write_config_ex(tmp_path, sandbox.base_url, upload_margin_s=0))
    ids = make_ids(15, 300)
    sandbox.configure(upload_window_s=2)
    sandbox.faults.add("upload", "slow", delay=60)
    async with daemon(config, crash=True):
        drop(tmp_path, "tweets", "ids.txt", ids)
        await wait_for(lambda: not sandbox.faults.pending(), what="the upload in flight")
    [row] = db_rows(tmp_path, "SELECT state, upload_expires_at FROM batches")
    assert row["state"] == "uploading"
    deadline = datetime.fromisoformat(row["upload_expires_at"])
    await wait_for(lambda: datetime.now(UTC) > deadline, timeout=10, what="the window to pass")
    sandbox.configure(upload_window_s=900)
    uploads_before = len(requests_to(sandbox, "upload"))
    async with daemon(config):
        await wait_for(lambda: settled(tmp_path, "tweets", "ids.txt"), what="delivery")

    assert_exact(tmp_path, sandbox, "tweets", "ids.txt", ids)
    assert [(s, n) for _name, s, n in sandbox_names(sandbox)] == [("expired", 0),
                                                                ("complete", 300)]
    # The stale upload URL was not even tried: one upload after the restart, the new job's.
    assert len(requests_to(sandbox, "upload")) == uploads_before + 1
    [abandoned] = logs.events("job.abandoned")
    assert abandoned["error"] == "UploadDeadlinePassed" and "window" in abandoned["message"]


# ---- 3. resumable upload ------------------------------------------------------------------

RESUMABLE = {"resumable_threshold_bytes": 1000, "upload_chunk_bytes": 262144}
CHUNK = 262144


def _put_bytes(records: list[dict[str, Any]]) -> list[tuple[int | None, int]]:
    return [(r["http_status"], r["bytes"]) for r in records
            if r.get("event") == "storage.request" and r.get("method") == "PUT"]


async def test_a_resumable_upload_continues_from_what_arrived(
    tmp_path: Path, sandbox: Sandbox, logs: LogTap
) -> None:
    config = load(write_config_ex(tmp_path, sandbox.base_url, **RESUMABLE))
    ids = make_ids(16, 40000)
    # POST (session), status query, chunk 0, chunk 1 pass; the last chunk is cut after 100000
    # bytes, which the storage keeps.
    sandbox.faults.add("upload", "slow", count=4, delay=0)
    sandbox.faults.add("upload", "reset", after_bytes=100000)
    await deliver(tmp_path, sandbox, config, "tweets", "big.txt", ids)
    [job] = sandbox.jobs()
    assert job["resumable"] is True and job["uploaded_ids"] == len(ids)
    assert [m for m, _p, _s in requests_to(sandbox, "upload")].count("POST") == 1  # one session
    total = logs.events("upload.completed")[0]["bytes"]
    puts = _put_bytes(logs.daemon_records())
    cut = [i for i, (status, _n) in enumerate(puts) if status is None]
    assert len(cut) == 1
    after = sum(n for _status, n in puts[cut[0] + 1:])
    assert after == total - (2 * CHUNK + 100000)  # only what had not arrived was sent again


async def test_a_resumable_upload_survives_a_sigkill_and_continues_its_session(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config_path = write_config_ex(tmp_path, sandbox.base_url, **RESUMABLE)
    ids = make_ids(17, 40000)
    sandbox.faults.add("upload", "slow", count=3, delay=0)  # POST, status query, chunk 0
    sandbox.faults.add("upload", "slow", delay=60)  # chunk 1 hangs: kill the daemon there
    first_log, second_log = tmp_path / "daemon-1.log", tmp_path / "daemon-2.log"
    process = spawn_daemon(config_path, first_log)
    try:
        drop(tmp_path, "tweets", "big.txt", ids)
        await wait_for(lambda: not sandbox.faults.pending(), timeout=30, what="chunk 1 in flight")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    [row] = db_rows(tmp_path, "SELECT state, upload_session_url FROM batches")
    assert row["state"] == "uploading" and row["upload_session_url"]
    again = spawn_daemon(config_path, second_log)
    try:
        await wait_for(lambda: settled(tmp_path, "tweets", "big.txt"), timeout=60,
                       what="delivery after the restart")
        again.send_signal(signal.SIGTERM)
        assert again.wait(timeout=30) == 0
    finally:
        if again.poll() is None:
            again.kill()

    assert_exact(tmp_path, sandbox, "tweets", "big.txt", ids)
    [job] = sandbox.jobs()
    assert job["uploaded_ids"] == len(ids)
    assert [m for m, _p, _s in requests_to(sandbox, "upload")].count("POST") == 1
    records = [LogTap.parse(line) for line in second_log.read_text().splitlines()]
    total = sum(len(i) + 1 for i in ids)  # the normalised body: one ID and "\n" per line
    assert sum(n for _s, n in _put_bytes([r for r in records if r])) == total - CHUNK
    for log in (first_log, second_log):
        text = log.read_text()
        assert not [m for m in SECRET_MARKERS if m in text]


async def test_a_resumable_session_the_storage_forgot_is_started_again(
    tmp_path: Path, sandbox: Sandbox, logs: LogTap
) -> None:
    config = load(write_config_ex(tmp_path, sandbox.base_url, **RESUMABLE))
    ids = make_ids(29, 40000)
    sandbox.faults.add("upload", "slow", count=3, delay=0)  # POST, status query, chunk 0
    sandbox.faults.add("upload", "slow", delay=60)  # chunk 1 hangs: stop the daemon there
    async with daemon(config, crash=True):
        drop(tmp_path, "tweets", "big.txt", ids)
        await wait_for(lambda: not sandbox.faults.pending(), what="chunk 1 in flight")
    # The session is cancelled at the storage (GCS: DELETE on it); it answers 404 from now on.
    [row] = db_rows(tmp_path, "SELECT upload_session_url FROM batches")
    async with aiohttp.ClientSession() as http, http.delete(
        yarl.URL(row["upload_session_url"], encoded=True)
    ) as resp:
        assert resp.status == 499
    async with daemon(config):
        await wait_for(lambda: settled(tmp_path, "tweets", "big.txt"), what="delivery")
    assert_exact(tmp_path, sandbox, "tweets", "big.txt", ids)
    [job] = sandbox.jobs()
    assert job["uploaded_ids"] == len(ids)
    assert [m for m, _p, _s in requests_to(sandbox, "upload")].count("POST") == 2
    assert len(logs.events("upload.session_gone")) == 1


async def test_a_resumable_session_started_in_time_may_finish_after_the_window(
    tmp_path: Path, sandbox: Sandbox, logs: LogTap
) -> None:
    config = load(write_config_ex(tmp_path, sandbox.base_url, upload_margin_s=0, **RESUMABLE))
    ids = make_ids(18, 40000)
    sandbox.configure(upload_window_s=2)
    sandbox.faults.add("upload", "slow", count=3, delay=0)
    sandbox.faults.add("upload", "slow", delay=2.5)  # chunk 1 lands after the window
    await deliver(tmp_path, sandbox, config, "tweets", "big.txt", ids)
    assert [(s, n) for _name, s, n in sandbox_names(sandbox)] == [("complete", 40000)]
    assert logs.events("job.abandoned") == []


# ---- 4. verified download and the download deadline ---------------------------------------


async def test_a_download_link_that_expired_gets_the_batch_resubmitted(
    tmp_path: Path, sandbox: Sandbox, logs: LogTap
) -> None:
    config = load(write_config_ex(tmp_path, sandbox.base_url))
    ids = make_ids(19, 300)
    sandbox.configure(processing_time_s=60)
    async with daemon(config):
        drop(tmp_path, "tweets", "ids.txt", ids)
        await wait_for(lambda: [j["status"] for j in sandbox.jobs()] == ["in_progress"],
                       what="the job processing")
        sandbox.configure(processing_time_s=0.2)
        sandbox.clock.advance(8 * 86400)  # complete, and its 7-day download link is dead
        await wait_for(lambda: settled(tmp_path, "tweets", "ids.txt"), what="delivery")

    assert_exact(tmp_path, sandbox, "tweets", "ids.txt", ids)
    assert len(sandbox.jobs()) == 2
    assert statuses(sandbox, "download") == [400, 200]  # ExpiredToken, then the new job's
    [abandoned] = logs.events("job.abandoned")
    assert abandoned["level"] == "error" and abandoned["error"] == "DownloadExpired"
    assert [j["attempt"] for j in manifest(tmp_path, "tweets", "ids")["jobs"]] == [1, 2]


async def test_the_download_deadline_warns_first_then_resubmits_before_it_passes(
    tmp_path: Path, sandbox: Sandbox, logs: LogTap
) -> None:
    config = load(write_config_ex(tmp_path, sandbox.base_url, extra={
        "jobs": {"download_margin_s": 1.0, "download_warn_lead_s": 2.5}}))
    ids = make_ids(20, 300)
    sandbox.configure(processing_time_s=60, download_window_s=4)
    async with daemon(config):
        drop(tmp_path, "users", "ids.txt", ids)
        await wait_for(lambda: [j["status"] for j in sandbox.jobs()] == ["in_progress"],
                       what="the job processing")
        sandbox.configure(processing_time_s=0.2, download_window_s=604800)
        await wait_for(lambda: bool(logs.events("job.abandoned")), what="the deadline")
        # The old job still runs and blocks the new one (one-job rule): let it finish.
        sandbox.clock.advance(61)
        await wait_for(lambda: settled(tmp_path, "users", "ids.txt"), what="delivery")

    assert_exact(tmp_path, sandbox, "users", "ids.txt", ids)
    first = sandbox.jobs()[0]
    warned = [r for r in logs.daemon_records() if r["level"] == "warning"
              and "download" in r["event"] and r.get("x_job_id") == first["id"]]
    [abandoned] = logs.events("job.abandoned")
    assert len(warned) == 1 and when(warned[0]) < when(abandoned)
    assert abandoned["level"] == "error" and abandoned["error"] == "DownloadDeadlinePassed"
    assert abandoned["x_job_id"] == first["id"]
    assert statuses(sandbox, "download") == [200]  # only the new job's results were fetched


async def test_per_type_lanes_fetch_one_types_results_while_the_others_upload_hangs(
    tmp_path: Path, sandbox: Sandbox, logs: LogTap
) -> None:
    config = load(write_config_ex(tmp_path, sandbox.base_url, concurrency="per-type"))
    sandbox.configure(concurrency="per-type", processing_time_s=0.5)
    tweets, users = make_ids(27, 300), make_ids(28, 300)
    async with daemon(config, crash=True):  # (without waiting for the hung upload)
        drop(tmp_path, "tweets", "t.txt", tweets)
        await wait_for(lambda: [j["status"] for j in sandbox.jobs()] == ["in_progress"],
                       what="the tweets job processing")
        sandbox.faults.add("upload", "slow", delay=30)  # the users upload hangs
        drop(tmp_path, "users", "u.txt", users)
        await wait_for(lambda: outcome(tmp_path, "tweets", "t.txt") == "delivered",
                       what="the tweets results")
        assert len(sandbox.jobs()) == 2 and statuses(sandbox, "upload") == [200], (
            "the users upload must still be in flight")
    assert_exact(tmp_path, sandbox, "tweets", "t.txt", tweets)


# ---- 2. credentials, signatures, the one-job rule -----------------------------------------


async def test_a_wrong_token_stops_the_pipeline_with_one_error_and_keeps_the_queue(
    tmp_path: Path, sandbox: Sandbox, logs: LogTap
) -> None:
    config = load(write_config_ex(tmp_path, sandbox.base_url))
    ids = make_ids(21, 300)
    wrong = "wrong-token-" + secrets.token_hex(8)
    # A token refused at start-up ends the start (tests/daemon/test_preflight.py): this one
    # is refused from just after READY (revoked at the API while the daemon was idle).
    async with daemon(config):
        sandbox.config.token = wrong
        drop(tmp_path, "tweets", "ids.txt", ids)
        await wait_for(lambda: [s for _m, _p, s in sandbox.request_log].count(401) >= 4,
                       what="a few refused calls")

    errors = [r for r in logs.daemon_records() if r["level"] == "error"]
    assert [(r["event"], r["http_status"]) for r in errors] == [("xapi.auth_failed", 401)]
    # Retried at the slowest backoff (0.5 s here), never counted against the batch.
    refused = [t for endpoint in ("create", "list") for t in request_times(logs, endpoint, 401)]
    refused.sort()
    assert all((b - a).total_seconds() >= 0.45 for a, b in itertools.pairwise(refused))
    [batch] = db_rows(tmp_path, "SELECT state, stage_retries FROM batches")
    assert batch == {"state": "creating", "stage_retries": 0}
    assert [r["state"] for r in db_rows(tmp_path, "SELECT state FROM inputs")] == ["batched"]
    assert outcome(tmp_path, "tweets", "ids.txt") is None
    assert wrong not in logs.text and sandbox.jobs() == []

    sandbox.config.token = TOKEN
    async with daemon(config):  # restarted once the token works again
        await wait_for(lambda: settled(tmp_path, "tweets", "ids.txt"), what="delivery")
    assert_exact(tmp_path, sandbox, "tweets", "ids.txt", ids)
    assert len(sandbox.jobs()) == 1


async def test_a_token_revoked_mid_job_pauses_the_lane_until_it_works_again(
    tmp_path: Path, sandbox: Sandbox, logs: LogTap
) -> None:
    config = load(write_config_ex(tmp_path, sandbox.base_url))
    ids = make_ids(30, 300)
    sandbox.configure(processing_time_s=1.0)
    async with daemon(config):
        drop(tmp_path, "tweets", "ids.txt", ids)
        await wait_for(lambda: [j["status"] for j in sandbox.jobs()] == ["in_progress"],
                       what="the job processing")
        sandbox.config.token = "rotated-at-the-api"  # the app's token was revoked
        await wait_for(lambda: statuses(sandbox, "get").count(401) >= 3, what="refused polls")
        sandbox.config.token = TOKEN  # ...and reinstated
        await wait_for(lambda: settled(tmp_path, "tweets", "ids.txt"), what="delivery")
    assert_exact(tmp_path, sandbox, "tweets", "ids.txt", ids)
    assert len(sandbox.jobs()) == 1 and logs.events("job.abandoned") == []
    errors = [r for r in logs.daemon_records() if r["level"] == "error"]
    assert [(r["event"], r["stage"]) for r in errors] == [("xapi.auth_failed", "waiting")]


async def test_an_upload_refused_for_its_signature_gets_a_new_job(
    tmp_path: Path, sandbox: Sandbox, logs: LogTap
) -> None:
    config = load(write_config_ex(tmp_path, sandbox.base_url))
    ids = make_ids(22, 300)
    sandbox.faults.add("upload", "slow", delay=3)
    # The refused job stays `created` (active for the one-job rule) until its window ends;
    # the daemon waits that out before its next POST. A short window keeps the test short.
    sandbox.configure(upload_window_s=8)
    async with daemon(config):
        drop(tmp_path, "tweets", "ids.txt", ids)
        await wait_for(lambda: not sandbox.faults.pending(), what="the upload in flight")
        # The storage rotates its signing key: the URL in hand no longer matches (GCS 403
        # SignatureDoesNotMatch); jobs created from now on are signed with the new key.
        rotated = Signer(secrets.token_bytes(32))
        sandbox.state.signer = rotated
        sandbox.state.store.signer = rotated
        await wait_for(lambda: settled(tmp_path, "tweets", "ids.txt"), what="delivery")

    assert_exact(tmp_path, sandbox, "tweets", "ids.txt", ids)
    assert [(s, n) for _name, s, n in sandbox_names(sandbox)] == [("expired", 0),
                                                                ("complete", 300)]
    assert statuses(sandbox, "upload") == [403, 200]
    [abandoned] = logs.events("job.abandoned")
    assert abandoned["http_status"] == 403 and "SignatureDoesNotMatch" in abandoned["message"]
    # It waited out its own abandoned job instead of meeting a 409 from it.
    assert 409 not in statuses(sandbox, "create")


async def test_another_clients_job_makes_the_daemon_wait_then_proceed(
    tmp_path: Path, sandbox: Sandbox, logs: LogTap
) -> None:
    config = load(write_config_ex(tmp_path, sandbox.base_url))
    ids = make_ids(23, 300)
    auth = {"Authorization": f"Bearer {sandbox.token}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sandbox.base_url}/2/compliance/jobs", headers=auth,
                             json={"type": "users", "name": "another-client"}) as resp:
            assert resp.status == 200
            other = (await resp.json())["data"]
        async with daemon(config):
            drop(tmp_path, "tweets", "ids.txt", ids)
            await wait_for(lambda: statuses(sandbox, "create").count(409) >= 3,
                           what="the daemon waiting on the conflict")
            assert outcome(tmp_path, "tweets", "ids.txt") is None
            # The other client uploads; its job runs, completes, and stops blocking.
            async with http.put(yarl.URL(other["upload_url"], encoded=True), data=b"20\n",
                                headers={"Content-Type": "text/plain"}) as resp:
                assert resp.status == 200
            await wait_for(lambda: settled(tmp_path, "tweets", "ids.txt"), what="delivery")

    assert_exact(tmp_path, sandbox, "tweets", "ids.txt", ids)
    names = [name for name, _s, _n in sandbox_names(sandbox)]
    assert names[0] == "another-client" and len(names) == 2  # never adopted, never touched
    conflicts = [r for r in logs.events("step.retry") if r["error"] == "ConflictError"]
    assert len(conflicts) >= 3 and all(r["attempt"] == 0 for r in conflicts)
    [batch] = db_rows(tmp_path, "SELECT attempt FROM batches")
    assert batch["attempt"] == 1


# ---- 2. attempt counts are data: a restart does not reset them ----------------------------


async def test_counted_retries_survive_a_restart(
    tmp_path: Path, sandbox: Sandbox, logs: LogTap
) -> None:
    config = load(write_config_ex(tmp_path, sandbox.base_url, max_stage_retries=4))
    ids = make_ids(24, 300)
    sandbox.faults.add("download", "503", count=3)  # three counted retries...
    sandbox.faults.add("download", "429", retry_after=2)  # ...then an uncounted wait: stop there
    async with daemon(config, crash=True):
        drop(tmp_path, "tweets", "ids.txt", ids)
        await wait_for(lambda: db_rows(tmp_path, "SELECT stage_waits FROM batches")
                       == [{"stage_waits": 1}], what="three retries and a rate-limit wait")
    [row] = db_rows(tmp_path, "SELECT state, stage_retries, stage_waits FROM batches")
    assert row == {"state": "downloading", "stage_retries": 3, "stage_waits": 1}

    # Two more failures: the 4th in a row (max_stage_retries) is the incident only if the 3
    # were kept; either way the job is kept and the results are fetched.
    sandbox.faults.add("download", "503", count=2)
    async with daemon(config):
        await wait_for(lambda: settled(tmp_path, "tweets", "ids.txt"), what="delivery")
    assert_exact(tmp_path, sandbox, "tweets", "ids.txt", ids)
    assert len(sandbox.jobs()) == 1 and logs.events("job.abandoned") == []
    [incident] = incident_lines(logs)
    assert incident["attempt"] == 4, "the persisted retry count must carry over the restart"
    assert incident["stage"] == "downloading" and incident["http_status"] == 503


async def test_remote_attempts_survive_a_restart(
    tmp_path: Path, sandbox: Sandbox, logs: LogTap
) -> None:
    config = load(write_config_ex(tmp_path, sandbox.base_url, max_attempts=2))
    ids = make_ids(25, 100)
    sandbox.faults.fail_next_jobs(2, error="Internal error")
    async with daemon(config, crash=True):
        drop(tmp_path, "tweets", "ids.txt", ids)
        await wait_for(lambda: db_rows(tmp_path, "SELECT attempt FROM batches")
                       == [{"attempt": 2}], what="the second remote job")
    async with daemon(config):
        await wait_for(lambda: settled(tmp_path, "tweets", "ids.txt"), what="the rejection")
    assert outcome(tmp_path, "tweets", "ids.txt") == "rejected"
    assert error_doc(tmp_path, "ids.txt")["attempts"] == 2
    assert len(sandbox.jobs()) == 2


# ---- 5. a dead letter goes back into the queue ----------------------------------------------


async def _give_up_then_requeue(tmp_path: Path, sandbox: Sandbox, extra_args: list[str]) -> None:
    # A permanent answer on the last attempt (transient ones never give up).
    config_path = write_config_ex(tmp_path, sandbox.base_url, max_attempts=1)
    ids = make_ids(26, 300)
    sandbox.faults.fail_next_jobs(1, error="Internal error")
    async with daemon(load(config_path)):
        drop(tmp_path, "users", "ids.txt", ids)
        await wait_for(lambda: settled(tmp_path, "users", "ids.txt"), what="the rejection")
        assert outcome(tmp_path, "users", "ids.txt") == "rejected"
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator", "requeue", "--config", str(config_path),
             *extra_args, "ids.txt"], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        # (Its rejected predecessor keeps the stem `ids` in the database, so the results may
        # come under another stem: find them by the manifest's input name.)
        await wait_for(lambda: bool(delivered_as(tmp_path, "users", "ids.txt"))
                       and spool_empty(tmp_path), what="delivery after requeue")
    assert not (tmp_path / "outbox" / "rejected" / "ids.txt").exists()
    assert not (tmp_path / "outbox" / "rejected" / "ids.txt.error.json").exists()
    [stem] = delivered_as(tmp_path, "users", "ids.txt")
    assert read_results(tmp_path, "users", stem) == sandbox.expected_results("users", ids)


async def test_a_file_given_up_on_and_requeued_while_the_daemon_runs_is_delivered(
    tmp_path: Path, sandbox: Sandbox, logs: LogTap
) -> None:
    # No --type: the rejection record says which IDs the file holds.
    await _give_up_then_requeue(tmp_path, sandbox, [])
