"""(e) Drop-to-outbox latency of single small files, one at a time, zero processing time.

Each file is renamed into the inbox (the producer's last step) and the clock stops when its
manifest appears; the next file is dropped only then. The baseline is the same round trip
without the daemon: a bare client (urllib) that creates a job, PUTs the same 100 IDs, polls
until complete and GETs the result, against the same sandbox.
"""

from __future__ import annotations

import math
import statistics
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import floor
from bench._common import (
    DEFAULT_SETTINGS,
    FIRST_ID,
    TUNED_SETTINGS,
    Daemon,
    Figure,
    describe_settings,
    drop,
    id_lines,
    manifest_path,
    sandbox,
    stage,
    wait_until,
)

P50_TARGET_S = 1.0


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _bare_round_trip(base_url: str, token: str, body: bytes) -> float:
    """One job by hand, in-process urllib calls only (no process start-up in the figure)."""
    started = time.perf_counter()
    job = floor.create_job(base_url, token, f"bare-{time.time_ns()}")
    put = urllib.request.Request(  # noqa: S310 - the sandbox's signed URL on 127.0.0.1
        job["upload_url"], data=body, method="PUT", headers={"Content-Type": "text/plain"})
    with floor.OPENER.open(put, timeout=30) as response:
        response.read()
    floor.wait_complete(base_url, token, job["id"])
    with floor.OPENER.open(job["download_url"], timeout=30) as response:
        response.read()
    return time.perf_counter() - started


def run(workdir: Path, settings: dict[str, Any], samples: int,
        timeout: float = 60) -> dict[str, Any]:
    workdir.mkdir(parents=True)
    latencies: list[float] = []
    bare: list[float] = []
    with sandbox(workdir / "sb", "--processing-time", "0") as sb, \
            Daemon(workdir, sb.base_url, sb.token, settings) as daemon:
        for i in range(samples):
            name = f"single-{i:03d}.txt"
            body = id_lines(FIRST_ID + i * 1000, 100)
            part = stage(workdir, name, body)
            started = drop(part)
            done = wait_until(lambda n=name: manifest_path(workdir, n).exists(), timeout,
                              f"the manifest of {name}", interval=0.002, alive=daemon.process)
            latencies.append(done - started)
            bare.append(_bare_round_trip(sb.base_url, sb.token, body))
    return {"latencies": latencies, "bare": bare,
            "p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
            "bare_p50": percentile(bare, 50), "bare_p95": percentile(bare, 95)}


def measure(workdir: Path, samples: int, default_samples: int) -> list[Figure]:
    figures = []
    for label, settings, count in (("tuned", TUNED_SETTINGS, samples),
                                   ("default", DEFAULT_SETTINGS, default_samples)):
        result = run(workdir / label, settings, count)
        for p in ("p50", "p95"):
            target = p == "p50" and label == "tuned"
            figures.append(Figure(
                key="e", measure=f"drop -> manifest {p}, {label} config",
                value=result[p], unit="s", baseline=result[f"bare_{p}"],
                baseline_label="bare client",
                ratio=result[p] / result[f"bare_{p}"],
                target=f"< {P50_TARGET_S:g} s" if target else "",
                passed=result[p] < P50_TARGET_S if target else None,
                note=f"{count} files one after another; {describe_settings(settings)}; "
                     f"mean {statistics.fmean(result['latencies']):.3f} s; bare client = "
                     "create + PUT + poll + GET by hand (urllib)" if p == "p50" else "",
                extra={"latencies": result["latencies"], "bare": result["bare"]}
                if p == "p50" else {},
            ))
    return figures
