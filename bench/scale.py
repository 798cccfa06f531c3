"""(h) A backlog of 1 billion IDs: a representative slice in the sandbox, the rest on paper.

1 billion IDs are 20 GB of ID files; 100 x 10M of them take X (at the default limits:
`jobs.max_ids_per_job` = 100M, `max_bytes_per_job` = 2 GB, one job at a time) ten jobs of
100M IDs each. Running all of that against the sandbox is beyond this machine's time budget
(the sandbox ingests about 30 MB/s and writes every result row), so the bench runs a
**slice**: `files` distinct files of `ids` IDs each, dropped at once, with the per-job
limit lowered to `job_ids` so that the slice runs several jobs back to back (the point is
what happens job after job, not the size of one; that is (b)/(c)). While it runs, a sampler
reads every 0.25 s:

- the daemon's VmRSS and VmHWM (/proc/<pid>/status), and its VmHWM at each job's end;
- the bytes allocated under the daemon's spool folder (spool + scratch: claimed inputs,
  normalised copies where a file needs them, split-part bodies, downloads and results all
  live there; a pack is streamed from its members, with no body of its own) and its inbox,
  against the input's size.

Memory is flat if the peak after the last job is within 25 MB of the peak after the first
one; disk if spool + scratch never exceeds 2x the input. The cost model (jobs, API calls,
wall time for 1B IDs as a function of X's processing rate) is computed on paper from the
limits, the poll schedule (core.polling.planned_polls) and the slice's measured per-ID
transfer cost, and printed in the notes.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench._common import (
    DEFAULT_SETTINGS,
    FIRST_ID,
    ID_STEP,
    Daemon,
    Figure,
    drop,
    manifest_path,
    read_kib,
    rejected,
    sandbox,
    wait_until,
    write_ids,
)

BACKLOG_IDS = 1_000_000_000
RSS_FLAT_MB = 25.0
RSS_LIMIT_MB = 150.0
DISK_RATIO = 2.0
RATES = (1e4, 1e5, 1e6, 1e7)  # X's processing rate, IDs/s, for the cost model


@dataclass(frozen=True)
class Slice:
    files: int
    ids: int  # per file
    job_ids: int  # jobs.max_ids_per_job for the run
    processing_s: float = 2.0  # the sandbox's simulated processing time per job


FULL = Slice(files=10, ids=10_000_000, job_ids=20_000_000)
QUICK = Slice(files=4, ids=1_000_000, job_ids=2_000_000)


def allocated(folder: Path) -> int:
    """Bytes allocated on disk under `folder` (st_blocks: sparse or hard-linked data once)."""
    total, seen = 0, set()
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                st = (Path(root) / name).lstat()
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


class Sampler(threading.Thread):
    def __init__(self, pid: int, folders: dict[str, Path], every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.folders, self.every = pid, folders, every
        self.samples: list[dict[str, float]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.stop_event.is_set():
            row = {"t": time.monotonic() - start, "rss_mb": read_kib(self.pid, "VmRSS") / 1024,
                   "hwm_mb": read_kib(self.pid, "VmHWM") / 1024}
            row.update({name: allocated(path) for name, path in self.folders.items()})
            self.samples.append(row)
            self.stop_event.wait(self.every)

    def peak(self, key: str) -> float:
        return max((s[key] for s in self.samples), default=0.0)


def run_slice(workdir: Path, plan: Slice) -> dict[str, Any]:
    workdir.mkdir(parents=True)
    inbox = workdir / "inbox" / "tweets"
    inbox.mkdir(parents=True)
    names = [f"backlog-{i:03d}.txt" for i in range(plan.files)]
    for i, name in enumerate(names):  # distinct IDs per file: no twin is linked or skipped
        write_ids(inbox / f"{name}.part", plan.ids, first=FIRST_ID + i * plan.ids * ID_STEP)
    input_bytes = sum((inbox / f"{n}.part").stat().st_size for n in names)
    os.sync()
    settings = {**DEFAULT_SETTINGS, "inbox.min_age_s": 0.2,
                "poll.initial_interval_s": 0.25, "jobs.max_ids_per_job": plan.job_ids}
    folders = {"spool": workdir / "state" / "spool", "inbox": workdir / "inbox"}
    with sandbox(workdir / "sb", "--processing-time", str(plan.processing_s)) as sb, \
            Daemon(workdir, sb.base_url, sb.token, settings) as daemon:
        sampler = Sampler(daemon.pid, folders)
        sampler.start()
        started = time.monotonic()
        for name in names:
            drop(inbox / f"{name}.part")
        job_ends: list[tuple[float, float]] = []  # (s after drop, VmHWM MB) at each batch.done

        def all_delivered() -> bool:
            done = daemon.events("batch.done")
            while len(job_ends) < len(done):
                job_ends.append((time.monotonic() - started, daemon.hwm_mb()))
            return all(manifest_path(workdir, n).exists() for n in names)

        wait_until(all_delivered, 600 + plan.files * plan.ids / 1e5, "the backlog's manifests",
                   interval=0.1, alive=daemon.process)
        wall = time.monotonic() - started
        sampler.stop_event.set()
        sampler.join()
        hwm, idle = daemon.hwm_mb(), daemon.idle_hwm_kib / 1024
        created = daemon.events("job.created")
        windows = [(datetime.fromisoformat(e["timestamp"]).timestamp()) for e in created]
    if rejected(workdir):
        raise AssertionError(f"input rejected: {rejected(workdir)}")
    return {"wall_s": wall, "input_bytes": input_bytes, "hwm_mb": hwm, "idle_mb": idle,
            "jobs": len(windows), "job_ends": job_ends,
            "spool_peak": sampler.peak("spool"), "inbox_peak": sampler.peak("inbox"),
            "with_inbox_peak": max((s["spool"] + s["inbox"] for s in sampler.samples),
                                   default=0.0),
            "rss_peak_sampled": sampler.peak("rss_mb"), "samples": len(sampler.samples)}


def cost_model(per_id_s: float, fixed_s: float) -> list[dict[str, Any]]:
    """1B IDs at the default limits, for each X processing rate: jobs, API calls, wall time.

    A job's wall time = X's processing (ids / rate) + the daemon's own work (per_id_s per ID:
    validate, upload, download, deliver, measured on the slice) + a fixed per-job cost + the
    poll lateness from the schedule. Jobs run one at a time (X's rule)."""
    from orchestrator.core.limits import RATE_LIMIT_REQUESTS, RATE_WINDOW_S
    from orchestrator.core.machine import Policy
    from orchestrator.core.polling import Estimate, planned_polls

    policy = Policy()
    per_job = min(100_000_000, 2_000_000_000 // 20)  # jobs.max_ids_per_job, max_bytes / 20 B
    jobs = math.ceil(BACKLOG_IDS / per_job)
    rows = []
    for rate in RATES:
        x_s = per_job / rate
        first = planned_polls(x_s, policy)  # no history yet
        later = planned_polls(x_s, policy, Estimate(first[-1], first[-1], 1))
        gets = len(first) + (jobs - 1) * len(later)
        job_s = [first[-1] + per_id_s * per_job + fixed_s] + \
            [later[-1] + per_id_s * per_job + fixed_s] * (jobs - 1)
        wall = sum(job_s)
        # The bound: creates and gets per 15 min, at most 150 - reserve each.
        per_window = max(gets, jobs) * RATE_WINDOW_S / wall
        rows.append({"rate_ids_s": rate, "jobs": jobs, "x_s_per_job": x_s,
                     "creates": jobs, "gets": gets, "api_calls": jobs + gets,
                     "wall_h": wall / 3600, "per_15min": per_window,
                     "bound_ok": per_window <= RATE_LIMIT_REQUESTS - 10})
    return rows


def measure(workdir: Path, plan: Slice) -> list[Figure]:
    r = run_slice(workdir / "h", plan)
    ids = plan.files * plan.ids
    ends = r["job_ends"]
    # Job 1 is often a lone file (the burst's first claim: issue 11 part 4) and takes the
    # one-input delivery path; jobs 2+ are packed (results split per input). Flat = no
    # growth from one packed job to the next, however long the backlog.
    same_shape = ends[1:] if len(ends) > 2 else ends
    base_hwm = same_shape[0][1] if same_shape else r["hwm_mb"]
    growth = r["hwm_mb"] - base_hwm
    sequence = [(round(t, 1), round(m, 1)) for t, m in ends]
    # The slice's own cost per ID (everything but the simulated processing and the polls).
    busy = r["wall_s"] - r["jobs"] * plan.processing_s
    per_id_s = max(0.0, busy / ids)
    model = cost_model(per_id_s, fixed_s=1.0)
    paper = "; ".join(
        f"X at {m['rate_ids_s']:.0e} IDs/s: {m['jobs']} jobs x {m['x_s_per_job']:.0f} s, "
        f"{m['api_calls']} API calls ({m['creates']} create + {m['gets']} get), "
        f"{m['wall_h']:.2f} h, {m['per_15min']:.1f} req/15 min" for m in model)
    ratio = r["spool_peak"] / r["input_bytes"]
    return [
        Figure(
            key="h", measure=f"daemon peak RSS, {plan.files} x {plan.ids / 1e6:g}M IDs in "
                             f"{r['jobs']} jobs",
            value=r["hwm_mb"], unit="MB", baseline=r["idle_mb"],
            baseline_label="same daemon, idle", ratio=r["hwm_mb"] / r["idle_mb"],
            target=f"< {RSS_LIMIT_MB:g} MB", passed=r["hwm_mb"] < RSS_LIMIT_MB,
            note=f"VmHWM at each job's end (s after drop, MB): {sequence}; "
                 f"jobs.max_ids_per_job = {plan.job_ids:,}",
            extra={k: v for k, v in r.items() if k != "job_ends"},
        ),
        Figure(
            key="h", measure=f"peak RSS growth, job {len(ends) - len(same_shape) + 1} -> "
                             f"job {len(ends)}",
            value=growth, unit="MB", baseline=base_hwm,
            baseline_label=f"VmHWM after job {len(ends) - len(same_shape) + 1}",
            ratio=r["hwm_mb"] / base_hwm, target=f"<= {RSS_FLAT_MB:g} MB (flat)",
            passed=abs(growth) <= RSS_FLAT_MB,
            note=f"job 1 -> job 2 (one input, then the first packed job): "
                 f"{ends[1][1] - ends[0][1] if len(ends) > 1 else 0.0:+.1f} MB",
        ),
        Figure(
            key="h", measure=f"spool + scratch disk peak / input ({plan.files} x "
                             f"{plan.ids / 1e6:g}M IDs)",
            value=round(ratio, 2), unit="x", baseline=r["input_bytes"] / 1e6,
            baseline_label="MB of input", ratio=ratio, target=f"<= {DISK_RATIO:g}x",
            passed=ratio <= DISK_RATIO,
            note=f"peak spool+scratch {r['spool_peak'] / 1e6:.0f} MB, inbox "
                 f"{r['inbox_peak'] / 1e6:.0f} MB, both together "
                 f"{r['with_inbox_peak'] / 1e6:.0f} MB "
                 f"({r['with_inbox_peak'] / r['input_bytes']:.2f}x) over {r['samples']} samples",
        ),
        Figure(
            key="h", measure=f"slice wall time, {ids / 1e6:g}M IDs in {r['jobs']} jobs",
            value=r["wall_s"], unit="s", baseline=per_id_s * 1e9 / 3600,
            baseline_label="h for 1B IDs at this per-ID cost, X time excluded",
            note=f"simulated processing {plan.processing_s:g} s per job; daemon + sandbox cost "
                 f"{per_id_s * 1e9:.1f} ns/ID; 1B IDs on paper: {paper}",
            extra={"cost_model": model},
        ),
    ]
