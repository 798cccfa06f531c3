"""(d) Many small files with a fixed processing time per job: packing vs one job per file.
Also (c) the daemon's peak RSS while it takes in all of those files at once.

The packing run drops every file at once and waits for every manifest. One job per file
(`jobs.pack_files = false`, what every other tool does) costs about one job's time per file,
so it runs on a subset only and is extrapolated linearly: the time to its first manifest
(start-up, claims, first job) plus (files - 1) times the mean time per further job, measured
between its first and last manifest. Both runs use the default config: a stream of short
jobs is what the rate limit (150 creates and 150 status requests per 15 minutes) bites on, and
a latency-tuned first poll would spend the status budget within a few dozen jobs. A real
one-job-per-file run of 1,000 files would in fact need >= 1000 / 140 rate windows for its
creates alone (~107 min): the linear extrapolation understates it.
"""

from __future__ import annotations

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

SPEEDUP_TARGET = 50.0
RSS_LIMIT_MB = 150.0
IDS_PER_FILE = 100


def _manifests(workdir: Path) -> int:
    try:
        with os.scandir(workdir / "outbox" / "tweets") as entries:
            return sum(entry.name.endswith(".manifest.json") for entry in entries)
    except FileNotFoundError:
        return 0


def run(workdir: Path, files: int, processing_s: float, pack: bool,
        timeout: float) -> dict[str, Any]:
    """Drop `files` files of IDS_PER_FILE IDs at once; time until every manifest is there."""
    workdir.mkdir(parents=True)
    settings = {**DEFAULT_SETTINGS, "jobs.pack_files": pack}
    parts = [
        stage(workdir, f"small-{i:04d}.txt",
              id_lines(FIRST_ID + i * IDS_PER_FILE * 7, IDS_PER_FILE, step=7))
        for i in range(files)
    ]
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
    if rejected(workdir):
        raise AssertionError(f"inputs rejected: {rejected(workdir)[:5]}")
    return {"wall_s": last - started, "first_s": first - started, "last_s": last - started,
            "jobs": calls["create"], "calls": calls, "hwm_mb": hwm, "idle_mb": idle}


def measure(workdir: Path, files: int, subset: int, processing_s: float = 2.0) -> list[Figure]:
    packed = run(workdir / "packed", files, processing_s, pack=True, timeout=300)
    single = run(workdir / "single", subset, processing_s, pack=False,
                 timeout=60 + subset * (processing_s + 10))
    per_job = (single["last_s"] - single["first_s"]) / max(1, subset - 1)
    extrapolated = single["first_s"] + (files - 1) * per_job
    speedup = extrapolated / packed["wall_s"]
    return [
        Figure(
            key="d", measure=f"{files} files x {IDS_PER_FILE} IDs, {processing_s:g} s/job, packed",
            value=packed["wall_s"], unit="s", baseline=extrapolated,
            baseline_label=f"1 job/file, extrapolated from {subset}",
            ratio=speedup, target=f"speedup >= {SPEEDUP_TARGET:g}x",
            passed=speedup >= SPEEDUP_TARGET,
            note=f"{describe_settings(DEFAULT_SETTINGS)}; packed: {packed['jobs']} jobs; one job "
                 f"per file measured on {subset} files ({single['wall_s']:.1f} s, "
                 f"{per_job:.2f} s per job) and extrapolated linearly: first manifest "
                 f"{single['first_s']:.2f} s + {files - 1} x {per_job:.2f} s; ratio = speedup",
            extra={"packed": packed, "single": single, "per_job_s": per_job},
        ),
        Figure(
            key="c", measure=f"daemon peak RSS, {files} small files at once",
            value=packed["hwm_mb"], unit="MB", baseline=packed["idle_mb"],
            baseline_label="same daemon, idle",
            ratio=packed["hwm_mb"] / packed["idle_mb"], target=f"< {RSS_LIMIT_MB:g} MB",
            passed=packed["hwm_mb"] < RSS_LIMIT_MB,
        ),
    ]
