"""(d) Many small files with a fixed processing time per job: packing vs one job per file.
Also (c) the daemon's peak RSS while it takes in 1,000 files at once.

Two packed runs, each dropping every file at once and waiting for every manifest:

- 100 files with the default limits: a burst must become **one** job;
- 1,000 files with `jobs.max_ids_per_job` set to 30% of their IDs, so that the limits bind:
  the daemon must use the minimum number of jobs the limits allow (files are never cut
  below the limit, so that minimum is the FIFO fill of whole files, printed beside the plain
  ceil(IDs / limit) bound).

One job per file (`jobs.pack_files = false`, what every other tool does) costs about one
job's time per file, so it runs on a subset only and is extrapolated linearly: the time to
its first manifest (start-up, claims, first job) plus (files - 1) times the mean time per
further job, measured between its first and last manifest. Every run uses the default config:
a stream of short jobs is what the rate limit (150 creates and 150 status requests per 15
minutes) bites on, and a latency-tuned first poll would spend the status budget within a few
dozen jobs. A real one-job-per-file run of 1,000 files would in fact need >= 1000 / 140 rate
windows for its creates alone (~107 min): the linear extrapolation understates it.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from bench._common import (
    DEFAULT_SETTINGS,
    FIRST_ID,
    Daemon,
    Figure,
    count_calls,
    describe_settings,
    drop,
    id_lines,
    rejected,
    sandbox,
    stage,
    wait_until,
)
from orchestrator.daemon.scheduler import PackingLimits

SPEEDUP_TARGET = 50.0
RSS_LIMIT_MB = 150.0
IDS_PER_FILE = 100
BURST_FILES = 100  # the burst that must be one job
LIMIT_SHARE = 0.3  # the many-files run: max_ids_per_job as a share of all its IDs


def _manifests(workdir: Path) -> int:
    try:
        with os.scandir(workdir / "outbox" / "tweets") as entries:
            return sum(entry.name.endswith(".manifest.json") for entry in entries)
    except FileNotFoundError:
        return 0


def minimum_jobs(file_ids: list[int], file_bytes: list[int],
                 limits: PackingLimits) -> tuple[int, int]:
    """(the fewest jobs whole files in FIFO order fit in, ceil(total / limit) bound)."""
    jobs, ids, size = 0, 0, 0
    for n, b in zip(file_ids, file_bytes, strict=True):
        if jobs == 0 or ids + n > limits.max_ids or size + b > limits.max_bytes_per_job:
            jobs, ids, size = jobs + 1, 0, 0
        ids, size = ids + n, size + b
    bound = max(math.ceil(sum(file_ids) / limits.max_ids),
                math.ceil(sum(file_bytes) / limits.max_bytes_per_job))
    return jobs, bound


def run(workdir: Path, files: int, processing_s: float, pack: bool, timeout: float,
        extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Drop `files` files of IDS_PER_FILE IDs at once; time until every manifest is there."""
    workdir.mkdir(parents=True)
    settings = {**DEFAULT_SETTINGS, "jobs.pack_files": pack, **(extra or {})}
    parts = [
        stage(workdir, f"small-{i:04d}.txt",
              id_lines(FIRST_ID + i * IDS_PER_FILE * 7, IDS_PER_FILE, step=7))
        for i in range(files)
    ]
    sizes = [p.stat().st_size for p in parts]
    with sandbox(workdir / "sb", "--processing-time", str(processing_s)) as sb, \
            Daemon(workdir, sb.base_url, sb.token, settings) as daemon:
        started = time.monotonic()
        for part in parts:
            drop(part)
        first = wait_until(lambda: _manifests(workdir) >= 1, timeout, "the first manifest",
                           interval=0.01, alive=daemon.process)
        last = wait_until(lambda: _manifests(workdir) >= files, timeout,
                          f"{files} manifests", interval=0.01, alive=daemon.process)
        hwm, idle = daemon.hwm_mb(), daemon.idle_hwm_kib / 1024
        calls = count_calls(sb.remote.requests())
        uploaded = sorted(job["uploaded_ids"] for job in sb.remote.jobs())
    if rejected(workdir):
        raise AssertionError(f"inputs rejected: {rejected(workdir)[:5]}")
    return {"wall_s": last - started, "first_s": first - started, "last_s": last - started,
            "jobs": calls["create"], "calls": calls, "hwm_mb": hwm, "idle_mb": idle,
            "uploaded_ids": uploaded, "file_bytes": sizes, "settings": settings}


def measure(workdir: Path, files: int, subset: int, processing_s: float = 2.0) -> list[Figure]:
    burst = run(workdir / "burst", BURST_FILES, processing_s, pack=True, timeout=300)
    limit = int(files * IDS_PER_FILE * LIMIT_SHARE)
    many = run(workdir / "many", files, processing_s, pack=True, timeout=600,
               extra={"jobs.max_ids_per_job": limit})
    single = run(workdir / "single", subset, processing_s, pack=False,
                 timeout=60 + subset * (processing_s + 10))
    per_job = (single["last_s"] - single["first_s"]) / max(1, subset - 1)

    def one_per_file(count: int) -> float:
        return float(single["first_s"] + (count - 1) * per_job)

    baseline_note = (f"one job per file measured on {subset} files ({single['wall_s']:.1f} s, "
                     f"{per_job:.2f} s per job) and extrapolated linearly: first manifest "
                     f"{single['first_s']:.2f} s + (files - 1) x {per_job:.2f} s")
    figures = []
    speedup = one_per_file(BURST_FILES) / burst["wall_s"]
    figures.append(Figure(
        key="d", measure=f"{BURST_FILES} files x {IDS_PER_FILE} IDs at once, "
                         f"{processing_s:g} s/job: remote jobs",
        value=burst["jobs"], unit="jobs", baseline=1, baseline_label="one burst",
        ratio=burst["jobs"] / 1, target="exactly 1 job", passed=burst["jobs"] == 1,
        note=f"{describe_settings(DEFAULT_SETTINGS)}; jobs counted from the sandbox's "
             f"request log (POST /2/compliance/jobs); {burst['calls']}",
        extra={"burst": burst},
    ))
    figures.append(Figure(
        key="d", measure=f"{BURST_FILES} files x {IDS_PER_FILE} IDs at once, "
                         f"{processing_s:g} s/job, packed",
        value=burst["wall_s"], unit="s", baseline=one_per_file(BURST_FILES),
        baseline_label=f"1 job/file, extrapolated from {subset}",
        ratio=speedup, target=f"speedup >= {SPEEDUP_TARGET:g}x",
        passed=speedup >= SPEEDUP_TARGET,
        note=f"ratio = speedup; {baseline_note}", extra={"single": single, "per_job_s": per_job},
    ))
    limits = PackingLimits(max_ids_per_job=limit)
    fewest, bound = minimum_jobs([IDS_PER_FILE] * files, many["file_bytes"], limits)
    figures.append(Figure(
        key="d", measure=f"{files} files x {IDS_PER_FILE} IDs at once, max_ids_per_job = "
                         f"{limit}: remote jobs",
        value=many["jobs"], unit="jobs", baseline=fewest,
        baseline_label=f"fewest the limits allow; ceil(IDs / limit) = {bound}",
        ratio=many["jobs"] / fewest, target="the minimum", passed=many["jobs"] == fewest,
        note=f"IDs per job: {many['uploaded_ids']}; wall {many['wall_s']:.1f} s (1 job/file "
             f"extrapolated: {one_per_file(files):.0f} s, "
             f"{one_per_file(files) / many['wall_s']:.0f}x)",
        extra={"many": many},
    ))
    figures.append(Figure(
        key="c", measure=f"daemon peak RSS, {files} small files at once",
        value=many["hwm_mb"], unit="MB", baseline=many["idle_mb"],
        baseline_label="same daemon, idle",
        ratio=many["hwm_mb"] / many["idle_mb"], target=f"< {RSS_LIMIT_MB:g} MB",
        passed=many["hwm_mb"] < RSS_LIMIT_MB,
    ))
    return figures
