"""(f) API calls per job, and how late completion is noticed, for long simulated jobs.

One 100-ID file per case goes through a daemon with the default poll settings (first poll
after 5 s, x1.5, at most 60 s apart, and at most a tenth of the job's age apart) against a
sandbox whose jobs take `processing_s`. Calls are counted from the sandbox's request log
(/_sandbox/requests); times come from its JSON log file (one line per request, stamped when
the answer is sent): completion = the upload's answer + processing time, noticed = the first
status request answered after that.

Long jobs are time-scaled: with factor k every duration the schedule depends on is divided
by k (processing time, poll initial and maximum interval, the sandbox's 15-minute rate
window); the schedule's shape (x1.5 growth, a tenth of the age) is scale-free, so the same
requests happen in the same order and the lateness scales by k. Fixed costs (ms per request)
get multiplied by k when scaled back: a slight overstatement of the lateness. A 60 s job is
run both ways as a check that the scaling is faithful.
"""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._common import (
    API_ENDPOINTS,
    DEFAULT_SETTINGS,
    FIRST_ID,
    Daemon,
    Figure,
    count_calls,
    drop,
    endpoint_of,
    id_lines,
    manifest_path,
    sandbox,
    sandbox_log,
    stage,
    wait_until,
)

RATE_LIMIT = 150  # requests per 15-minute window, per endpoint (create, get, list)
RATE_WINDOW_S = 900.0
LATE_FRACTION = 0.1
LATE_FLOOR_S = 5.0


@dataclass(frozen=True)
class Case:
    processing_s: float  # simulated (real-world) processing time
    scale: float = 1.0  # durations are divided by this

    @property
    def label(self) -> str:
        how = "real time" if self.scale == 1 else f"time-scaled 1/{self.scale:g}"
        return f"{self.processing_s:g} s job ({how})"


def run_case(workdir: Path, case: Case) -> dict[str, Any]:
    k = case.scale
    workdir.mkdir(parents=True)
    settings = {
        **DEFAULT_SETTINGS,
        "inbox.min_age_s": 0.2,  # intake is not what is measured here
        "poll.initial_interval_s": DEFAULT_SETTINGS["poll.initial_interval_s"] / k,
        "poll.max_interval_s": DEFAULT_SETTINGS["poll.max_interval_s"] / k,
    }
    args = ["--processing-time", str(case.processing_s / k),
            "--rate-window", str(RATE_WINDOW_S / k)]
    name = "poll.txt"
    part = stage(workdir, name, id_lines(FIRST_ID, 100))
    with sandbox(workdir / "sb", *args) as sb, \
            Daemon(workdir, sb.base_url, sb.token, settings) as daemon:
        drop(part)
        wait_until(lambda: manifest_path(workdir, name).exists(),
                   case.processing_s / k * 1.5 + 60, f"the manifest of {case.label}",
                   interval=0.01, alive=daemon.process)
        requests = sb.remote.requests()
    calls = count_calls(requests)
    log = sandbox_log(workdir / "sb")
    created = min(r["at"] for r in log if r["endpoint"] == "create")
    uploaded = max(r["at"] for r in log if r["endpoint"] == "upload" and r["status"] == 200)
    complete = uploaded + case.processing_s / k
    gets = [r["at"] for r in log
            if endpoint_of(r["method"], r["path"]) == "get" and r["status"] == 200]
    noticed = min(at for at in gets if at >= complete)
    late = (noticed - complete) * k
    age = (complete - created) * k
    busy = (noticed - created) * k  # how long the job held the one-job slot until noticed
    # Jobs of this length back to back, for a whole rate window: the busiest endpoint's rate.
    per_window = max(calls[e] for e in API_ENDPOINTS) * RATE_WINDOW_S / max(busy, 1e-9)
    return {
        "calls": calls, "api_calls": sum(calls[e] for e in API_ENDPOINTS),
        "late_s": late, "age_s": age, "busy_s": busy,
        "late_limit_s": max(LATE_FRACTION * age, LATE_FLOOR_S),
        "per_window": per_window, "get_times_s": [round((g - created) * k, 2) for g in gets],
    }


def model(processing_s: float) -> dict[str, float]:
    """The default schedule on paper, timed from the upload: status requests for a job of
    this length, and the worst lateness it allows (the interval in force at completion)."""
    from orchestrator.core.machine import Policy, poll_interval

    policy = Policy(poll_initial_s=DEFAULT_SETTINGS["poll.initial_interval_s"],
                    poll_max_s=DEFAULT_SETTINGS["poll.max_interval_s"],
                    poll_factor=DEFAULT_SETTINGS["poll.backoff_factor"])
    at, polls, interval = policy.poll_initial_s, 1, policy.poll_initial_s
    while at < processing_s:
        interval = poll_interval(polls, policy, age_s=at)
        at += interval
        polls += 1
    return {"gets": polls, "worst_late_s": interval}


def measure(workdir: Path, cases: list[Case]) -> list[Figure]:
    with concurrent.futures.ThreadPoolExecutor(len(cases)) as pool:
        # Independent sandbox + daemon pairs; all of them mostly sleep, so they run at once.
        futures = {
            case: pool.submit(run_case, workdir / f"f-{i}", case)
            for i, case in enumerate(cases)
        }
        results = {case: future.result() for case, future in futures.items()}
    figures = []
    for case, r in results.items():
        expected = model(case.processing_s)
        calls = r["calls"]
        figures.append(Figure(
            key="f", measure=f"API calls/job, {case.label}",
            value=r["api_calls"], unit="calls", baseline=1 + expected["gets"],
            baseline_label="schedule model",
            ratio=r["api_calls"] / (1 + expected["gets"]),
            target=f"sustained <= {RATE_LIMIT}/15 min/endpoint",
            passed=r["per_window"] <= RATE_LIMIT and calls["429"] == 0,
            note=f"create {calls['create']}, get {calls['get']}, list {calls['list']}, "
                 f"429s {calls['429']}; jobs like this back to back: {r['per_window']:.0f} "
                 f"requests/15 min on the busiest endpoint (the figure checked); model = 1 "
                 f"create + the default schedule's status polls",
            extra=r,
        ))
        figures.append(Figure(
            key="f", measure=f"completion noticed after, {case.label}",
            value=r["late_s"], unit="s", baseline=expected["worst_late_s"],
            baseline_label="model worst case",
            ratio=r["late_s"] / expected["worst_late_s"],
            target=f"<= max(10% of age, 5 s) = {r['late_limit_s']:.1f} s",
            passed=r["late_s"] <= r["late_limit_s"],
            note=f"job age at completion {r['age_s']:.1f} s; status requests at "
                 f"{r['get_times_s']} s after create; model worst case = the poll interval "
                 f"in force when the job completes",
        ))
    return figures


def full_cases() -> list[Case]:
    return [Case(10), Case(60), Case(600, scale=20), Case(60, scale=20)]


def quick_cases() -> list[Case]:
    return [Case(10, scale=5), Case(60, scale=20), Case(600, scale=100)]
