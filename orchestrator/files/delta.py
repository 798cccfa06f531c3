"""Deltas between two deliveries of one dataset, by external sort: memory stays flat.

A delivery's result rows and its input's IDs are each sorted into a file of lines keyed by
the ID zero-padded to 19 digits (so byte order is numeric order), in sorted runs of bounded
size merged with heapq. The delta is one merge pass over three sorted streams: the previous
delivery's rows, this delivery's rows and this input's IDs:

- `new`: an ID X lists now and did not list before (its rows, verbatim, under "rows");
- `changed`: listed both times with other actions or reasons ("rows" now, "previous");
- `reversed`: listed before, still in the dataset, and no longer listed (X can reverse
  protected, suspended and deactivated states; "previous"): the user may restore it;
- listed before but no longer in the dataset is not a change X made (the user removed it,
  most likely because of that result), so it is only counted as `not_rechecked`.

Pure file processing; the daemon runs it in a worker thread.
"""

from __future__ import annotations

import contextlib
import heapq
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

from orchestrator.files.atomic import Progress, atomic_output

KEY_BYTES = 19  # an ID, zero-padded: byte order is numeric order
ROWS_PER_RUN = 50_000  # ~150-byte rows: ~10 MB of Python objects per run
IDS_PER_RUN = 250_000  # 20-byte lines
PROGRESS_EVERY = 65_536  # lines between progress() calls (the lane's heartbeat)


class _Row(msgspec.Struct):
    id: str
    action: str | None = None
    reason: str | None = None


_ROW = msgspec.json.Decoder(_Row)


@dataclass(frozen=True, slots=True)
class DeltaCounts:
    new: int = 0
    changed: int = 0
    reversed: int = 0
    not_rechecked: int = 0
    unchanged: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"new": self.new, "changed": self.changed, "reversed": self.reversed,
                "not_rechecked": self.not_rechecked, "unchanged": self.unchanged}


def _key(id_text: str | bytes) -> bytes:
    raw = id_text.encode() if isinstance(id_text, str) else id_text
    return raw.rjust(KEY_BYTES, b"0")


def _sorted_into(lines: Iterable[bytes], dest: Path, per_run: int, scratch: Path,
                 progress: Progress | None) -> int:
    """Sort `lines` (each starting with its key, ending with `\\n`) into `dest`, atomically."""
    runs: list[Path] = []
    count = 0
    batch: list[bytes] = []
    with tempfile.TemporaryDirectory(prefix=".delta-", dir=scratch) as tmp:
        def spill() -> None:
            batch.sort()
            run = Path(tmp) / f"run-{len(runs):05}"
            with open(run, "wb") as out:
                out.writelines(batch)
            runs.append(run)
            batch.clear()

        for line in lines:
            batch.append(line)
            count += 1
            if len(batch) >= per_run:
                spill()
                if progress is not None:
                    progress()
        with atomic_output(dest) as out:
            if not runs:  # it all fitted in one run: no merge
                batch.sort()
                out.writelines(batch)
            else:
                if batch:
                    spill()
                with contextlib.ExitStack() as stack:
                    files = [stack.enter_context(open(run, "rb")) for run in runs]
                    out.writelines(heapq.merge(*files))
    return count


def sort_rows(results: Path, dest: Path, scratch: Path, per_run: int = ROWS_PER_RUN,
              progress: Progress | None = None) -> int:
    """A delivery's normalised result rows (JSON Lines) sorted by ID into `dest`, each line
    `<key> <row as delivered>`; returns the row count."""
    def keyed() -> Iterator[bytes]:
        with open(results, "rb") as inp:
            for line in inp:
                if line.strip():
                    row = _ROW.decode(line)
                    yield _key(row.id) + b" " + line.rstrip(b"\n") + b"\n"

    return _sorted_into(keyed(), dest, per_run, scratch, progress)


def sort_ids(ids: Path, dest: Path, scratch: Path, per_run: int = IDS_PER_RUN,
             progress: Progress | None = None) -> int:
    """An upload body (one ID per line) sorted into `dest` as keys, one per line."""
    def keyed() -> Iterator[bytes]:
        with open(ids, "rb") as inp:
            for line in inp:
                stripped = line.strip()
                if stripped:
                    yield _key(stripped) + b"\n"

    return _sorted_into(keyed(), dest, per_run, scratch, progress)


def _groups(path: Path | None) -> Iterator[tuple[bytes, list[bytes]]]:
    """(key, rows) per ID from a sorted rows file (X may answer one ID with two rows, e.g.
    `scrub_geo` and `deleted`); nothing for None (a first delivery)."""
    if path is None:
        return
    key, rows = b"", list[bytes]()
    with open(path, "rb") as inp:
        for line in inp:
            if line[:KEY_BYTES] != key:
                if rows:
                    yield key, rows
                key, rows = line[:KEY_BYTES], []
            rows.append(line[KEY_BYTES + 1 :].rstrip(b"\n"))
    if rows:
        yield key, rows


def _keys(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as inp:
        for line in inp:
            yield line[:KEY_BYTES]


_END: tuple[bytes, list[bytes]] = (b"\xff" * KEY_BYTES, [])  # sorts after every key


def _verdicts(rows: list[bytes]) -> list[tuple[str | None, str | None]]:
    return sorted(((row.action, row.reason) for row in map(_ROW.decode, rows)),
                  key=lambda pair: (pair[0] or "", pair[1] or ""))


def _line(change: bytes, key: bytes, rows: list[bytes] | None,
          previous: list[bytes] | None) -> bytes:
    line = b'{"change":"' + change + b'","id":"' + key.lstrip(b"0") + b'"'
    if rows is not None:
        line += b',"rows":[' + b",".join(rows) + b"]"
    if previous is not None:
        line += b',"previous":[' + b",".join(previous) + b"]"
    return line + b"}\n"


def write_delta(previous: Path | None, current: Path, input_keys: Path, dest: Path,
                progress: Progress | None = None) -> DeltaCounts:
    """The delta of `current` against `previous` (sorted rows files; None: the first
    delivery, every ID is new) given this input's sorted IDs, into `dest` (JSON Lines, one
    line per ID in ID order: change, id, rows now and/or before, verbatim; atomically)."""
    new = changed = reversed_ = not_rechecked = unchanged = 0
    prev_groups, cur_groups, keys = _groups(previous), _groups(current), _keys(input_keys)
    prev, cur = next(prev_groups, _END), next(cur_groups, _END)
    listed = next(keys, _END[0])
    seen = 0
    with atomic_output(dest) as out:
        while prev is not _END or cur is not _END:
            seen += 1
            if progress is not None and not seen % PROGRESS_EVERY:
                progress()
            if cur[0] < prev[0]:
                out.write(_line(b"new", cur[0], cur[1], None))
                new += 1
                cur = next(cur_groups, _END)
            elif prev[0] < cur[0]:
                while listed < prev[0]:
                    listed = next(keys, _END[0])
                if listed == prev[0]:
                    out.write(_line(b"reversed", prev[0], None, prev[1]))
                    reversed_ += 1
                else:
                    not_rechecked += 1
                prev = next(prev_groups, _END)
            else:
                if _verdicts(cur[1]) != _verdicts(prev[1]):
                    out.write(_line(b"changed", cur[0], cur[1], prev[1]))
                    changed += 1
                else:
                    unchanged += 1
                prev, cur = next(prev_groups, _END), next(cur_groups, _END)
    return DeltaCounts(new, changed, reversed_, not_rechecked, unchanged)
