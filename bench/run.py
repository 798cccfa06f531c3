"""Run every benchmark of compliance-orchestrator and print one table of figures.

    .venv/bin/python bench/run.py            # the full run (~6 minutes on 2 cores)
    .venv/bin/python bench/run.py --quick    # smaller sizes: a smoke run (~1 minute)
    .venv/bin/python bench/run.py --only b,e --json /tmp/figures.json

Exit status: 0 when every target is met, 1 when one is missed (the table says which),
2 when a benchmark could not run. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # `python bench/run.py` from a fresh clone
    sys.path.insert(0, str(_ROOT))
# The daemon and the sandbox run as `python -m orchestrator ...` from a temp folder.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(_ROOT), os.environ.get("PYTHONPATH", "")) if p
)

from bench import (  # noqa: E402
    delta,
    end_to_end,
    failover,
    latency,
    packing,
    polling,
    records,
    results_path,
    scale,
    validate,
)
from bench._common import Figure, Skipped, fmt, machine_info, make_workspace  # noqa: E402


@dataclass(frozen=True)
class Sizes:
    big_ids: int  # (a), (b) and the large (c) input
    small_ids: int  # the small (c) input
    files: int  # (d) files packed
    subset: int  # (d) files run one job per file, extrapolated to `files`
    samples: int  # (e) tuned-config drops
    default_samples: int  # (e) default-config drops
    poll_cases: list[polling.Case]
    backlog: scale.Slice  # (h)
    result_rows: int = 2_800_000  # (g): the affected rows of a 10M-ID job (issue 11)
    failovers: int = 10  # (l): leader kills
    lease_ttl_s: float = 10.0  # (l): the lease of the failover run
    pg_files: int = 1000  # (l): small files on PostgreSQL vs SQLite


FULL = Sizes(10_000_000, 1_000_000, 1000, 15, 20, 20, polling.full_cases(), scale.FULL)
QUICK = Sizes(1_000_000, 100_000, 100, 5, 5, 2, polling.quick_cases(), scale.QUICK, 280_000,
              3, 6.0, 200)


def benchmarks(sizes: Sizes) -> dict[str, Callable[[Path], list[Figure]]]:
    return {
        "a": lambda w: validate.measure(w / "a", sizes.big_ids),
        "b": lambda w: end_to_end.measure(w / "b", sizes.big_ids, sizes.small_ids),
        "d": lambda w: packing.measure(w / "d", sizes.files, sizes.subset),
        "e": lambda w: latency.measure(w / "e", sizes.samples, sizes.default_samples),
        "f": lambda w: polling.measure(w / "f", sizes.poll_cases),
        "g": lambda w: results_path.measure(w / "g", sizes.result_rows),
        "h": lambda w: scale.measure(w, sizes.backlog),
        "j": lambda w: delta.measure(w / "j", sizes.big_ids, sizes.small_ids),
        "k": lambda w: records.measure(w / "k", sizes.small_ids),
        "l": lambda w: failover.measure(w / "l", sizes.failovers, sizes.lease_ttl_s,
                                        sizes.pg_files),
    }


def table(figures: list[Figure]) -> str:
    """A Markdown table (paste-able into RESULTS.md), then the notes of each row."""
    head = ["#", "measure", "value", "baseline", "ratio", "target", "result"]
    rows = []
    for f in sorted(figures, key=lambda f: f.key):
        result = "-" if f.passed is None else ("pass" if f.passed else "**FAIL**")
        baseline = fmt(f.baseline, f.unit)
        if f.baseline_label:
            baseline += f" ({f.baseline_label})"
        rows.append([f.key, f.measure, fmt(f.value, f.unit), baseline,
                     "-" if f.ratio is None else f"{f.ratio:.2f}", f.target or "-", result])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    notes = [f"- ({f.key}) {f.measure}: {f.note}" for f in sorted(figures, key=lambda f: f.key)
             if f.note]
    return "\n".join(out + (["", *notes] if notes else []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--only", default="a,b,d,e,f,g,h,j,k,l",
                        help="comma-separated benchmarks to run (default: %(default)s; "
                             "b also measures c's 1M/10M peaks, d c's 1,000 files)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp folder (logs, configs, outboxes) for inspection")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    chosen = [k.strip() for k in args.only.split(",") if k.strip()]
    available = benchmarks(sizes)
    unknown = [k for k in chosen if k not in available]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {sorted(available)}")

    info = machine_info()
    print(f"machine: {info['nproc']} cpus, {info['cpu']}, {info['ram']} RAM, "
          f"Python {info['python']}, load {info['load_at_start']}", flush=True)
    workdir, cleanup = make_workspace(args.keep)
    print(f"workspace: {workdir}{' (kept)' if args.keep else ''}", flush=True)
    figures: list[Figure] = []
    errors: dict[str, str] = {}
    skipped: dict[str, str] = {}
    started = time.monotonic()
    try:
        for key in chosen:
            t0 = time.monotonic()
            print(f"[{key}] running ...", flush=True)
            try:
                figures += available[key](workdir)
            except Skipped as why:
                skipped[key] = str(why)
                print(f"[{key}] SKIPPED: {why}", flush=True)
            except Exception as error:  # one broken benchmark must not hide the others
                errors[key] = f"{type(error).__name__}: {error}"
                traceback.print_exc()
            print(f"[{key}] done in {time.monotonic() - t0:.0f} s", flush=True)
    finally:
        cleanup()
    total = time.monotonic() - started
    print()
    print(table(figures))
    for key, message in skipped.items():
        print(f"- ({key}) SKIPPED: {message}")
    for key, message in errors.items():
        print(f"- ({key}) DID NOT RUN: {message}")
    missed = [f for f in figures if f.passed is False]
    print(f"\n{len(figures)} figures, {len(missed)} target(s) missed, "
          f"{len(errors)} benchmark(s) failed; total {total:.0f} s"
          f"{' (--quick)' if args.quick else ''}")
    if args.json:
        args.json.write_text(json.dumps(
            {"machine": info, "quick": args.quick, "total_s": total, "errors": errors,
             "skipped": skipped, "figures": [f.as_dict() for f in figures]}, indent=2, default=str))
    if args.quick:
        print("(--quick: smaller sizes than the issue's; the targets are meant for the full run "
              "and do not set the exit status)")
    if errors:
        return 2
    return 1 if missed and not args.quick else 0


if __name__ == "__main__":
    sys.exit(main())
