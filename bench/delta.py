"""(j) A dataset's delta at 1M and 10M IDs: peak memory flat, and its speed.

Each size is a dataset of N IDs checked twice: 10% of the IDs listed by "X" each time, the
two selections overlapping by half and some reasons changed, and 5% of the IDs dropped from
the dataset before the second check. The whole delta (sort both deliveries' rows and the
input's IDs into runs on disk, merge, write the delta) runs in a fresh Python process whose
peak RSS (VmHWM) is read against its own RSS right after the imports. The target is the
issue's: the 10M-ID peak within 25 MB of the 1M-ID one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from bench._common import Figure

TARGET_GROWTH_MB = 25.0
REASONS = (b"deleted", b"suspended", b"protected", b"deactivated")

_CHILD = r"""
import json, sys, time
from pathlib import Path

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

from orchestrator.files.delta import sort_ids, sort_rows, write_delta
work = Path(sys.argv[1])
idle = hwm()
started = time.perf_counter()
sort_rows(work / "prev.jsonl", work / "prev.sorted", work)
sort_rows(work / "cur.jsonl", work / "cur.sorted", work)
sort_ids(work / "cur.ids", work / "cur.keys", work)
counts = write_delta(work / "prev.sorted", work / "cur.sorted", work / "cur.keys",
                     work / "delta.jsonl")
elapsed = time.perf_counter() - started
print(json.dumps({"idle_mb": idle, "peak_mb": hwm(), "seconds": elapsed,
                  "counts": counts.as_dict()}))
"""


def _row(tweet_id: int, reason: bytes) -> bytes:
    return (b'{"id":"%d","action":"delete","created_at":"2019-08-10T12:22:39.022Z","reason":"'
            % tweet_id + reason + b'"}\n')


def make_dataset(workdir: Path, ids: int) -> None:
    """prev.jsonl, cur.jsonl (X's unordered order: by a multiplicative hash) and cur.ids."""
    workdir.mkdir(parents=True, exist_ok=True)
    first = 1_000_000_000_000_000_000
    with open(workdir / "prev.jsonl", "wb") as prev, open(workdir / "cur.jsonl", "wb") as cur, \
            open(workdir / "cur.ids", "wb") as listed:
        prev_rows, cur_rows, listed_ids = [], [], []
        for n in range(ids):
            scrambled = (n * 2654435761) % ids  # a permutation when ids is not a multiple of it
            tweet_id = first + scrambled * 97
            bucket = scrambled % 20
            if bucket < 2:  # listed both times; a quarter of them with another reason
                prev_rows.append(_row(tweet_id, REASONS[scrambled % 4]))
                cur_rows.append(_row(tweet_id, REASONS[(scrambled + (scrambled % 4 == 0)) % 4]))
            elif bucket == 2:  # listed before only: reversed, or dropped from the dataset
                prev_rows.append(_row(tweet_id, b"protected"))
            elif bucket == 3:  # listed now only: new
                cur_rows.append(_row(tweet_id, b"deleted"))
            if bucket != 2 or (scrambled // 20) % 2:
                listed_ids.append(b"%d\n" % tweet_id)
            if len(listed_ids) >= 100_000:
                prev.writelines(prev_rows)
                cur.writelines(cur_rows)
                listed.writelines(listed_ids)
                prev_rows, cur_rows, listed_ids = [], [], []
        prev.writelines(prev_rows)
        cur.writelines(cur_rows)
        listed.writelines(listed_ids)


def run_child(workdir: Path) -> dict[str, object]:
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", _CHILD, str(workdir)], capture_output=True,
                          text=True, check=True, cwd=root, timeout=1800)
    result: dict[str, object] = json.loads(done.stdout)
    return result


def measure(workdir: Path, big_ids: int, small_ids: int) -> list[Figure]:
    runs = {}
    for ids in (small_ids, big_ids):
        folder = workdir / f"{ids}"
        started = time.perf_counter()
        make_dataset(folder, ids)
        made_s = time.perf_counter() - started
        runs[ids] = {**run_child(folder), "generate_s": made_s}
    small, big = runs[small_ids], runs[big_ids]
    growth = float(big["peak_mb"]) - float(small["peak_mb"])  # type: ignore[arg-type]
    seconds = float(big["seconds"])  # type: ignore[arg-type]
    return [
        Figure(
            key="j", measure=f"dataset delta peak RSS growth, {small_ids / 1e6:g}M -> "
            f"{big_ids / 1e6:g}M IDs", value=growth, unit="MB",
            baseline=float(small["peak_mb"]),  # type: ignore[arg-type]
            baseline_label=f"{small_ids / 1e6:g}M-ID peak",
            ratio=float(big["peak_mb"]) / float(small["peak_mb"]),  # type: ignore[arg-type]
            target=f"<= {TARGET_GROWTH_MB:g} MB", passed=growth <= TARGET_GROWTH_MB,
            note=(f"peaks {float(small['peak_mb']):.1f} / {float(big['peak_mb']):.1f} MB "  # type: ignore[arg-type]
                  f"(idle {float(big['idle_mb']):.1f} MB after imports); {big_ids / 1e6:g}M "  # type: ignore[arg-type]
                  f"IDs: delta in {seconds:.1f} s ({big_ids / seconds / 1e6:.2f}M IDs/s), "
                  f"counts {big['counts']}"),
            extra={"runs": {str(k): v for k, v in runs.items()}},
        )
    ]
