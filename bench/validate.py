"""(a) Validate + spool throughput of one big ID file, against a plain copy of it.

Both read the same file from the page cache (warmed first) and write a durable copy
(fsync) into the same folder; each is run `repeats` times, alternating, and the best run
counts (the least disturbed by anything else on the machine).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from bench._common import Figure, cached_id_file, warm
from orchestrator.files.idfile import normalise_id_file

TARGET_IDS_PER_S = 20e6  # issue 11 part 3 (issue 6 part 4 asked for "several million")


def copy_fsync(src: Path, dest: Path) -> None:
    shutil.copyfile(src, dest)
    fd = os.open(dest, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def measure(workdir: Path, ids: int, repeats: int = 2) -> list[Figure]:
    src = cached_id_file(ids)
    workdir.mkdir(parents=True, exist_ok=True)
    warm(src)
    copy_times: list[float] = []
    validate_times: list[float] = []
    for _ in range(repeats):
        dest = workdir / "copy.ids"
        started = time.perf_counter()
        copy_fsync(src, dest)
        copy_times.append(time.perf_counter() - started)
        dest.unlink()

        dest = workdir / "spool.ids"
        started = time.perf_counter()
        report = normalise_id_file(src, dest)
        validate_times.append(time.perf_counter() - started)
        if report.id_count != ids or dest.stat().st_size != src.stat().st_size:
            raise AssertionError(f"validation wrote {report.id_count} IDs, expected {ids}")
        dest.unlink()
    copy_s, validate_s = min(copy_times), min(validate_times)
    rate, copy_rate = ids / validate_s, ids / copy_s
    return [
        Figure(
            key="a", measure=f"validate+spool, one {ids / 1e6:g}M-ID file",
            value=rate, unit="IDs/s", baseline=copy_rate,
            baseline_label="copyfile+fsync", ratio=rate / copy_rate,
            target=f">= {TARGET_IDS_PER_S / 1e6:g}M IDs/s", passed=rate >= TARGET_IDS_PER_S,
            note=f"best of {repeats}: validate {validate_s:.2f} s, copy {copy_s:.2f} s",
            extra={"validate_s": validate_times, "copy_s": copy_times},
        )
    ]
