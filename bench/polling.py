"""(f) API calls per job, how late completion is noticed, and the sustained request rate, for
streams of 10 s, 60 s, 600 s and 3,600 s jobs.

Each case is one daemon (default poll settings) and one sandbox whose jobs take
`processing_s`. `jobs` files of 100 distinct IDs are dropped at once with
`jobs.pack_files = false`, so the daemon runs them back to back, one job per file: the first
job has no history (the plain schedule), every later one is timed by the earlier ones'
durations (core.polling), which is the point of the row. Calls come from the sandbox's
request log (/_sandbox/requests); times from its JSON log (stamped when each answer is
sent). Requests are split per job at each create (X runs one job at a time, so a job's
status requests all come before the next create). Completion = the upload's answer +
processing time; noticed = the first status request answered after that; the job's age =
completion - its create.

Long jobs are time-scaled by k: the processing time, the daemon's first and maximum poll
interval, the sandbox's rate window *and the daemon's idea of it* (`poll.rate_window_s`,
whose static spacing 900/(150 - reserve) is otherwise unscaled) are divided by k. The dense
spacing floor otherwise comes from the sandbox's own rate-limit headers, so it scales with
the window. Every duration the schedule depends on is then divided by k and the same
requests happen in the same order (tests/core/test_polling.py checks that on paper); times
are multiplied back by k, which overstates fixed per-request costs (milliseconds) k-fold.
A 60 s stream runs both in real time and time-scaled 1/20 as a check of the scaling.
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
    ID_STEP,
    Daemon,
    Figure,
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
IDS_PER_FILE = 100


@dataclass(frozen=True)
class Case:
    processing_s: float  # simulated (real-world) processing time
    scale: float = 1.0  # durations are divided by this
    jobs: int = 4  # files dropped at once, run back to back

    @property
    def label(self) -> str:
        how = "real time" if self.scale == 1 else f"time-scaled 1/{self.scale:g}"
        return f"{self.processing_s:g} s jobs x{self.jobs} ({how})"


def _per_job(log: list[dict[str, Any]], processing_s: float, k: float) -> list[dict[str, Any]]:
    """Split the request log at each create; time every job (scaled back by k)."""
    jobs: list[dict[str, Any]] = []
    for row in sorted(log, key=lambda r: r["at"]):
        endpoint = endpoint_of(row["method"], row["path"])
        if endpoint == "create" and row["status"] in (200, 201):
            jobs.append({"created": row["at"], "rows": []})
        if jobs:
            jobs[-1]["rows"].append((endpoint, row))
    out = []
    for job in jobs:
        rows = job["rows"]
        uploads = [r["at"] for e, r in rows if e == "storage" and r["method"] == "PUT"
                   and r["status"] in (200, 201)]
        gets = [r["at"] for e, r in rows if e == "get" and r["status"] == 200]
        if not uploads or not gets:
            continue
        complete = max(uploads) + processing_s / k
        noticed = min((at for at in gets if at >= complete), default=None)
        if noticed is None:
            continue
        age = (complete - job["created"]) * k
        calls = {e: sum(1 for x, r in rows if x == e) for e in (*API_ENDPOINTS, "storage")}
        calls["429"] = sum(1 for _, r in rows if r["status"] == 429)
        late = (noticed - complete) * k
        out.append({
            "created": job["created"], "noticed": noticed, "calls": calls,
            "api_calls": sum(calls[e] for e in API_ENDPOINTS), "late_s": late, "age_s": age,
            "late_limit_s": max(LATE_FRACTION * age, LATE_FLOOR_S),
            "get_ages_s": [round((g - max(uploads)) * k, 2) for g in gets],
        })
    return out


def run_case(workdir: Path, case: Case) -> dict[str, Any]:
    k = case.scale
    workdir.mkdir(parents=True)
    settings = {
        **DEFAULT_SETTINGS,
        "inbox.min_age_s": 0.2,  # intake is not what is measured here
        "jobs.pack_files": False,  # one job per file: a stream of jobs of one length
        "poll.initial_interval_s": DEFAULT_SETTINGS["poll.initial_interval_s"] / k,
        "poll.max_interval_s": DEFAULT_SETTINGS["poll.max_interval_s"] / k,
        "poll.rate_window_s": RATE_WINDOW_S / k,
    }
    args = ["--processing-time", str(case.processing_s / k),
            "--rate-window", str(RATE_WINDOW_S / k)]
    names = [f"poll-{i:02d}.txt" for i in range(case.jobs)]
    parts = [stage(workdir, name, id_lines(FIRST_ID + i * IDS_PER_FILE * ID_STEP, IDS_PER_FILE))
             for i, name in enumerate(names)]
    with sandbox(workdir / "sb", *args) as sb, \
            Daemon(workdir, sb.base_url, sb.token, settings) as daemon:
        for part in parts:
            drop(part)
        budget = case.jobs * (case.processing_s / k * 1.5 + 30) + 60
        wait_until(lambda: all(manifest_path(workdir, n).exists() for n in names),
                   budget, f"the manifests of {case.label}", interval=0.02,
                   alive=daemon.process)
    jobs = _per_job(sandbox_log(workdir / "sb"), case.processing_s, k)
    if len(jobs) != case.jobs:
        raise RuntimeError(f"{case.label}: {len(jobs)} jobs timed of {case.jobs}")
    # The stream's rate: from the first create to the last job noticed, per busiest endpoint.
    span = (jobs[-1]["noticed"] - jobs[0]["created"]) * k
    totals = {e: sum(j["calls"][e] for j in jobs) for e in API_ENDPOINTS}
    busiest = max(API_ENDPOINTS, key=lambda e: totals[e])
    per_window = totals[busiest] * RATE_WINDOW_S / max(span, 1e-9)
    return {"jobs": jobs, "span_s": span, "totals": totals, "busiest": busiest,
            "per_window": per_window, "429": sum(j["calls"]["429"] for j in jobs)}


def model(processing_s: float) -> dict[str, float]:
    """The no-history schedule on paper (what every job cost before history was used)."""
    from orchestrator.core.machine import Policy
    from orchestrator.core.polling import planned_polls

    ages = planned_polls(processing_s, Policy())
    return {"calls": 1 + len(ages), "late_s": ages[-1] - processing_s}


def measure(workdir: Path, cases: list[Case]) -> list[Figure]:
    with concurrent.futures.ThreadPoolExecutor(len(cases)) as pool:
        # Independent sandbox + daemon pairs; all of them mostly sleep, so they run at once.
        futures = {case: pool.submit(run_case, workdir / f"f-{i}", case)
                   for i, case in enumerate(cases)}
        results = {case: future.result() for case, future in futures.items()}
    figures = []
    for case, r in results.items():
        plain = model(case.processing_s)
        first, later = r["jobs"][0], r["jobs"][1:]
        mean_calls = sum(j["api_calls"] for j in later) / max(1, len(later))
        worst = max(r["jobs"], key=lambda j: j["late_s"] - j["late_limit_s"])
        per_job = "; ".join(
            f"job {i + 1}: {j['api_calls']} calls, late {j['late_s']:.2f} s "
            f"(limit {j['late_limit_s']:.1f}), gets at {j['get_ages_s']} s after upload"
            for i, j in enumerate(r["jobs"]))
        figures.append(Figure(
            key="f", measure=f"API calls/job, {case.label}, jobs 2+ (history)",
            value=round(mean_calls, 2), unit="calls", baseline=plain["calls"],
            baseline_label="no-history schedule",
            ratio=mean_calls / plain["calls"], target="fewer than without history",
            passed=mean_calls <= plain["calls"],
            note=f"job 1 (no history yet) {first['api_calls']} calls; {per_job}",
            extra=r,
        ))
        figures.append(Figure(
            key="f", measure=f"completion noticed after, {case.label}, worst job",
            value=worst["late_s"], unit="s", baseline=plain["late_s"],
            baseline_label="no-history schedule",
            ratio=worst["late_s"] / plain["late_s"] if plain["late_s"] > 0 else None,
            target=f"<= max(10% of age, 5 s) = {worst['late_limit_s']:.1f} s, every job",
            passed=all(j["late_s"] <= j["late_limit_s"] for j in r["jobs"]),
            note=f"job age at completion {worst['age_s']:.1f} s; lateness per job "
                 f"{[round(j['late_s'], 2) for j in r['jobs']]} s",
        ))
        figures.append(Figure(
            key="f", measure=f"requests/15 min back to back, {case.label}",
            value=round(r["per_window"], 1), unit="req", baseline=RATE_LIMIT,
            baseline_label="X's limit per endpoint",
            ratio=r["per_window"] / RATE_LIMIT, target=f"<= {RATE_LIMIT}, no 429",
            passed=r["per_window"] <= RATE_LIMIT and r["429"] == 0,
            note=f"busiest endpoint {r['busiest']}: {r['totals']} over {r['span_s']:.0f} s "
                 f"(first create to last completion noticed), 429s {r['429']}",
        ))
    return figures


def full_cases() -> list[Case]:
    return [Case(10, jobs=12), Case(60, jobs=4), Case(600, scale=20, jobs=4),
            Case(3600, scale=60, jobs=3), Case(60, scale=20, jobs=4)]


def quick_cases() -> list[Case]:
    return [Case(10, scale=5, jobs=4), Case(60, scale=20, jobs=3),
            Case(600, scale=100, jobs=3), Case(3600, scale=600, jobs=3)]
