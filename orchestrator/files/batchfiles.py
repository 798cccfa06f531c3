"""File work for packing and splitting, synchronous (runs in worker threads), streaming.

- upload bodies: a slice of lines of one normalised ID file, or several files end to end;
- results split back per input: which result rows belong to which input is answered by a
  temporary SQLite database on disk, never by an in-memory map of every ID.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar

from orchestrator.files.atomic import Progress, atomic_output, atomic_write_files
from orchestrator.files.resultblocks import regions, report_progress, scan_region
from orchestrator.files.results import MAX_RESULT_LINE_BYTES, PROGRESS_LINES, line_reason

BLOCK = 4 << 20
# A normalised line is at most 19 digits + "\n": the bytes limit turns into an ID count.
MAX_LINE_BYTES = 20
# Compacting can lengthen a line a little (a number written back in another notation), so the
# download's line limit is not a limit on the normalised file; this only bounds memory.
_COUNT_LINE_LIMIT = 8 * MAX_RESULT_LINE_BYTES

_T = TypeVar("_T")


def _reporting(items: Iterable[_T], progress: Progress | None) -> Iterator[_T]:
    """`items`, calling progress() every PROGRESS_LINES of them."""
    if progress is None:
        yield from items
        return
    for count, item in enumerate(items, start=1):
        if count % PROGRESS_LINES == 0:
            progress()
        yield item



class ResultIndex(Protocol):
    """Result lines by ID on disk (store.scratch.ResultIndex): memory stays flat however many
    IDs a batch has. Repeated rows of an ID are kept as X sent them (see that module)."""

    def add(self, rows: Iterable[tuple[str, bytes]]) -> None: ...

    def lines_for(self, ids: Iterable[str]) -> Iterator[bytes]: ...


@dataclass(frozen=True, slots=True)
class Slice:
    """Lines [first, first + count) of a normalised ID file (count < 0: to the end)."""

    path: Path
    first: int = 0
    count: int = -1


def _nth_newline(block: bytes, n: int, start: int = 0) -> int:
    """Index of the n-th (1-based) newline at or after `start`."""
    index = start - 1
    for _ in range(n):
        index = block.index(b"\n", index + 1)
    return index


def copy_slice(piece: Slice, out: BinaryIO) -> tuple[int, int]:
    """Append the slice's lines to `out`; returns (lines, bytes) written."""
    to_skip, to_copy = piece.first, piece.count
    lines = written = 0
    with open(piece.path, "rb") as stream:
        while block := stream.read(BLOCK):
            start = 0
            if to_skip:
                newlines = block.count(b"\n")
                if newlines < to_skip:
                    to_skip -= newlines
                    continue
                start = _nth_newline(block, to_skip) + 1
                to_skip = 0
            chunk = memoryview(block)[start:]
            newlines = block.count(b"\n", start)
            if to_copy < 0 or newlines < to_copy:
                out.write(chunk)
                lines += newlines
                written += len(chunk)
                if to_copy >= 0:
                    to_copy -= newlines
                continue
            end = _nth_newline(block, to_copy, start) + 1
            out.write(memoryview(block)[start:end])
            return lines + to_copy, written + end - start
    return lines, written


def build_body(pieces: Sequence[Slice], dest: Path) -> tuple[int, int]:
    """Write the upload body (temp + fsync + rename); returns (IDs, bytes)."""
    total_lines = total_bytes = 0
    with atomic_output(dest) as out:
        for piece in pieces:
            lines, written = copy_slice(piece, out)
            total_lines += lines
            total_bytes += written
    return total_lines, total_bytes


def iter_slice_ids(piece: Slice) -> Iterator[str]:
    """The IDs of a slice as text, streaming."""
    seen = 0
    carry = b""
    with open(piece.path, "rb") as stream:
        while block := stream.read(BLOCK):
            parts = (carry + block).split(b"\n")
            carry = parts.pop()
            for raw in parts:
                if not raw:
                    continue
                if seen >= piece.first and (piece.count < 0 or seen < piece.first + piece.count):
                    yield raw.decode("ascii")
                seen += 1
                if piece.count >= 0 and seen >= piece.first + piece.count:
                    return
    if carry and seen >= piece.first and (piece.count < 0 or seen < piece.first + piece.count):
        yield carry.decode("ascii")


@dataclass(frozen=True, slots=True)
class ResultCounts:
    affected: int
    by_reason: dict[str, int]


def count_results(path: Path, progress: Progress | None = None) -> ResultCounts:
    """Affected rows and counts by reason of a normalised result file (blank lines skipped),
    a block at a time where the lines are in X's shape (resultblocks.py)."""
    by_reason: Counter[str] = Counter()
    affected = line_no = 0
    with open(path, "rb", buffering=0) as stream:
        # Our own compact lines: any length normalising let through is fine here.
        for region in regions(stream, limit=_COUNT_LINE_LIMIT):
            scan = scan_region(region)
            if scan is not None:
                by_reason.update(scan.by_reason)
                affected += scan.lines - scan.blank
                lines = scan.lines
            else:
                pieces = region.lines()
                lines = len(pieces)
                for line in pieces:
                    body = line.strip()
                    if body:
                        affected += 1
                        by_reason[line_reason(body)] += 1  # same spelling as normalising
            report_progress(progress, PROGRESS_LINES, line_no, line_no + lines)
            line_no += lines
    return ResultCounts(affected, dict(by_reason))


# A normalised line that starts like this has that id: normalising leaves no repeated keys.
_LEADING_ID = re.compile(rb'\{"id":"([0-9]{1,64})"')


def _row_id(line: bytes) -> str:
    """The `_id_key` of a normalised result line's id (parsed only when not X's shape)."""
    match = _LEADING_ID.match(line)
    return _id_key(match.group(1).decode("ascii") if match else str(json.loads(line)["id"]))


def _id_key(value: str) -> str:
    """IDs compare as numbers: "007" in an input and "7" from X are the same ID."""
    return value.lstrip("0") or "0"


# A pack this small is split in memory, without the scratch database: its IDs (at most this
# many, ~100 bytes each in a dict) and its results (at most this many bytes) are held.
IN_MEMORY_IDS = 200_000
IN_MEMORY_RESULT_BYTES = 16 << 20


def _is_small(results: Path, members: Sequence[tuple[Slice, Path]]) -> bool:
    if results.stat().st_size > IN_MEMORY_RESULT_BYTES:
        return False
    whole = [piece.path for piece, _ in members if piece.count < 0]
    known = sum(piece.count for piece, _ in members if piece.count >= 0)
    if known > IN_MEMORY_IDS or sum(p.stat().st_size for p in whole) > 20 * IN_MEMORY_IDS:
        return False
    for path in whole:  # a few MB at most: count the lines
        with open(path, "rb") as stream:
            while block := stream.read(BLOCK):
                known += block.count(b"\n")
    return known <= IN_MEMORY_IDS


def split_results(
    results: Path,
    members: Sequence[tuple[Slice, Path]],
    index: ResultIndex,
    progress: Progress | None = None,
) -> list[ResultCounts]:
    """Write, for each (IDs slice, destination), the result rows whose id is in that slice.

    An ID present in two inputs appears in both outputs: exactly what one job per input
    would have produced. `index` (empty, on disk) keeps memory flat however many IDs; a
    small pack (the usual one: many small files) does without it.
    `progress()` is called every PROGRESS_LINES lines read or written.
    """
    if _is_small(results, members):
        return _split_in_memory(results, members, progress)
    with open(results, "rb") as stream:
        index.add((_row_id(line), line.rstrip(b"\n"))
                  for line in _reporting(stream, progress) if line.strip())
    counts = []
    for piece, dest in members:
        with atomic_output(dest) as out:
            wanted = (_id_key(value) for value in _reporting(iter_slice_ids(piece), progress))
            for line in index.lines_for(wanted):
                out.write(line + b"\n")
        counts.append(count_results(dest, progress))
    return counts


def _split_in_memory(
    results: Path, members: Sequence[tuple[Slice, Path]], progress: Progress | None
) -> list[ResultCounts]:
    """split_results for a small pack, with the same rows in the same order: a row goes to
    each member once per time its ID occurs there; byte-identical rows of one ID count once
    (see store.scratch for why)."""
    holders: dict[str, list[int]] = {}  # ID -> the members holding it, once per occurrence
    for number, (piece, _) in enumerate(members):
        for value in _reporting(iter_slice_ids(piece), progress):
            holders.setdefault(_id_key(value), []).append(number)
    outputs: list[list[bytes]] = [[] for _ in members]
    seen: set[tuple[str, bytes]] = set()
    with open(results, "rb") as stream:
        for line in _reporting(stream, progress):
            if not line.strip():
                continue
            key = _row_id(line)
            row = (key, line.rstrip(b"\n"))
            if row in seen:
                continue
            seen.add(row)
            for number in holders.get(key, ()):
                outputs[number].append(row[1] + b"\n")
    atomic_write_files([(dest, b"".join(lines)) for (_, dest), lines in
                        zip(members, outputs, strict=True)])
    return [ResultCounts(len(lines), dict(Counter(line_reason(line) for line in lines)))
            for lines in outputs]
