"""Profile what the daemon does with a big result file after downloading it (b's tail).

    .venv/bin/python bench/profile_results.py [IDS]     # default 10,000,000 IDs
    .venv/bin/python bench/profile_results.py --cached [ROWS]   # bench (g)'s file, 2.8M rows

Runs one job of IDS IDs through a sandbox process by hand (or takes the cached result file of
bench (g), in X's recorded shape, with `--cached`), keeps its raw result file, then
times and profiles (cProfile) the steps the daemon runs on it for a single-input batch, in
the same order: `normalise_results` (download -> spool results), `atomic_write_file` (spool
-> outbox), `count_results` (the manifest's counts) and a SHA-256 of the output. The daemon
runs these in worker threads, where a profiler attached to the daemon's main thread sees
nothing; calling them here on the same file shows where the time goes.
"""

from __future__ import annotations

import cProfile
import hashlib
import io
import pstats
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from bench import floor  # noqa: E402
from bench._common import cached_id_file, make_workspace, sandbox  # noqa: E402
from bench.results_path import cached_result_file  # noqa: E402
from orchestrator.files.atomic import atomic_write_file  # noqa: E402
from orchestrator.files.batchfiles import count_results  # noqa: E402
from orchestrator.files.results import normalise_results  # noqa: E402


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def main(argv: list[str]) -> int:
    cached = bool(argv) and argv[0] == "--cached"
    args = argv[1:] if cached else argv
    ids = int(args[0]) if args else (2_800_000 if cached else 10_000_000)
    workdir, cleanup = make_workspace(keep=False)
    try:
        raw = workdir / "raw.json"
        if cached:
            shutil.copyfile(cached_result_file(ids), raw)
        else:
            with sandbox(workdir / "sb", "--processing-time", "0") as sb:
                job = floor.create_job(sb.base_url, sb.token, "profile")
                floor.put(job["upload_url"], cached_id_file(ids))
                floor.wait_complete(sb.base_url, sb.token, job["id"])
                floor.get(job["download_url"], raw)
        results, target = workdir / "results.jsonl", workdir / "outbox.jsonl"
        steps: list[tuple[str, Callable[[], object]]] = [
            ("normalise_results (download -> spool)", lambda: normalise_results(raw, results)),
            ("atomic_write_file (spool -> outbox)", lambda: atomic_write_file(target, results)),
            ("count_results (manifest counts)", lambda: count_results(target)),
            ("sha256 of the output", lambda: _sha256(target)),
        ]
        what = "rows (cached, X's shape)" if cached else "IDs"
        print(f"{ids:,} {what}; raw result file {raw.stat().st_size / 1e6:.0f} MB")
        for label, step in steps:
            started = time.perf_counter()
            step()
            print(f"  {label:42s} {time.perf_counter() - started:6.2f} s")
        profile = cProfile.Profile()
        profile.enable()
        for _, step in steps:
            step()
        profile.disable()
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(10)
        print(out.getvalue())
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
