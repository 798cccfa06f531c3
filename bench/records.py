"""(k) JSON Lines and CSV inputs read as IDs (`files/records.py`), lines per second.

1M Tweet objects as `twarc2 flatten` writes them (~540 bytes each: text, entities with
nested `id`s, metrics, referenced tweets) and 1M CSV rows (`created_at,tweet_id,text`),
generated once into the bench cache. Each is read from the page cache (warmed) into an
fsynced upload body, best of 2; the baseline is `shutil.copyfile` + fsync of the same
file, as lines per second.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bench._common import Figure, warm
from bench.validate import copy_fsync
from orchestrator.files.records import extract_ids

TARGET_LINES_PER_S = 1e6  # issue 13 part 6
CACHE = Path("/tmp/compliance-bench-cache")


def _tweet(n: int) -> dict[str, object]:
    tweet_id = str(1_500_000_000_000_000_000 + n * 7919)
    return {"author_id": str(2244994945 + n % 5000), "created_at": "2026-11-01T12:00:00.000Z",
            "edit_history_tweet_ids": [tweet_id], "text": f"status update number {n} " * 4,
            "lang": "en", "conversation_id": tweet_id, "possibly_sensitive": False,
            "public_metrics": {"retweet_count": n % 7, "reply_count": n % 3,
                               "like_count": n % 11, "quote_count": 0},
            "entities": {"mentions": [{"start": 0, "end": 8, "username": "someone",
                                       "id": "783214"}]},
            "referenced_tweets": [{"type": "replied_to", "id": "1499999999999999999"}],
            "id": tweet_id}


def cached_inputs(lines: int) -> tuple[Path, Path]:
    CACHE.mkdir(parents=True, exist_ok=True)
    jsonl, csv = CACHE / f"tweets-{lines}.jsonl", CACHE / f"tweets-{lines}.csv"
    if not jsonl.exists():
        part = jsonl.with_suffix(".part")
        with open(part, "wb") as out:
            for start in range(0, lines, 50_000):
                out.write(b"".join(json.dumps(_tweet(n)).encode() + b"\n"
                                   for n in range(start, min(lines, start + 50_000))))
        part.rename(jsonl)
    if not csv.exists():
        part = csv.with_suffix(".part")
        with open(part, "w") as out:
            out.write("created_at,tweet_id,text\n")
            for n in range(lines):
                out.write(f'2026-11-01T12:00:00Z,{1_500_000_000_000_000_000 + n * 7919},'
                          f'"status update, number {n}"\n')
        part.rename(csv)
    return jsonl, csv


def _best(work: Path, src: Path, fmt: str, repeats: int) -> tuple[float, float, int]:
    read_s, copy_s, ids = [], [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        copy_fsync(src, work / "copy")
        copy_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        report = extract_ids(src, work / "body.ids", fmt)  # type: ignore[arg-type]
        read_s.append(time.perf_counter() - started)
        ids = report.id_count
    return min(read_s), min(copy_s), ids


def measure(workdir: Path, lines: int, repeats: int = 2) -> list[Figure]:
    workdir.mkdir(parents=True, exist_ok=True)
    jsonl, csv = cached_inputs(lines)
    figures = []
    for src, fmt, label in ((jsonl, "jsonl", "JSON Lines, flattened Tweets"),
                            (csv, "csv", "CSV with a header")):
        warm(src)
        read_s, copy_s, ids = _best(workdir, src, fmt, repeats)
        if ids != lines:
            raise AssertionError(f"{fmt}: read {ids} IDs, expected {lines}")
        rate, baseline = lines / read_s, lines / copy_s
        size_mb = src.stat().st_size / 1e6
        jsonl_row = fmt == "jsonl"
        figures.append(Figure(
            key="k", measure=f"{label}, {lines / 1e6:g}M lines", value=rate, unit="lines/s",
            baseline=baseline, baseline_label="copyfile+fsync", ratio=rate / baseline,
            target=f">= {TARGET_LINES_PER_S / 1e6:g}M lines/s" if jsonl_row else
            "informational",
            passed=rate >= TARGET_LINES_PER_S if jsonl_row else None,
            note=f"{size_mb:.0f} MB ({size_mb * 1e6 / lines:.0f} bytes/line), best of "
                 f"{repeats}: {read_s:.2f} s ({size_mb / read_s:.0f} MB/s), copy {copy_s:.2f} s",
        ))
    return figures
