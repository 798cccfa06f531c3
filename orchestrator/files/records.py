"""The files users really hold: JSON Lines of v2 objects and CSV/TSV exports, read as IDs.

Pure, synchronous file processing (the daemon runs it in a worker thread), streamed a block
at a time. Each reader writes the same upload body `normalise_id_file` writes (one ID per
line, `\\n`, atomically and fsynced) and returns the same IdFileReport, so everything after
intake is unchanged. Bad rows are reported with their line numbers, like bad ID lines.

JSON Lines: one JSON object per line, either a Tweet/User object with a top-level `id` (as
`twarc2 flatten` and most archivers write them) or a whole API response page whose
`data` is a list of such objects or a single one (as `twarc2 search` writes them). A page
with only `errors` holds nothing stored and adds no ID. Only `id` is decoded: msgspec skips
every other field without building it, a whole block in one call; lines are only counted
once a bad row needs its number. Like msgspec, the fast path accepts an object spread over
lines or two on one line: the IDs are the same. Blank lines are skipped (and counted only
in a block that has a bad row).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import os
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, Literal

import msgspec

from orchestrator.errors import InputRejected
from orchestrator.files.atomic import Progress, atomic_output
from orchestrator.files.idfile import (
    MAX_ID_DIGITS,
    BadLine,
    IdFileReport,
    Policy,
    _open_regular,
    classify_bad_id,
    excerpt,
    validate_id_file,
)

InputFormat = Literal["ids", "jsonl", "csv"]
FORMATS: tuple[str, ...] = ("auto", "ids", "jsonl", "csv")
DEFAULT_ID_COLUMNS = ("id", "tweet_id", "user_id")

BLOCK_SIZE = 4 * 1024 * 1024
# JSON Lines are read in larger blocks: the reader thread needs the GIL back after each read
# and each sha256 update, and waits up to a switch interval (5 ms) for it while this thread
# decodes; fewer, larger blocks make that wait negligible. Two in memory at a time.
JSONL_BLOCK_SIZE = 16 * 1024 * 1024
# A response page of 100 Tweets with expansions is ~0.5 MB; a line far past this is not JSONL.
MAX_JSON_LINE_BYTES = 16 * 1024 * 1024
MAX_ID = 2**63 - 1
_SNIFF_BYTES = 64 * 1024


class _Flat(msgspec.Struct):
    """The common case: one object per line, its `id` a string (as X writes IDs)."""

    id: str


class _Object(msgspec.Struct):
    id: str | int | None = None


class _Line(msgspec.Struct):
    id: str | int | None = None
    data: list[_Object] | _Object | None = None
    errors: list[msgspec.Raw] | None = None


_DECODER = msgspec.json.Decoder(_Line)
_FLAT_DECODER = msgspec.json.Decoder(_Flat)
# Newline-joined IDs are all valid when every line has 1-19 digits (possessive: no backtracking).
_CLEAN_IDS = re.compile(rb"(?:[0-9]{1,%d}+\n)*+" % MAX_ID_DIGITS)


def detect_format(head: bytes, id_columns: tuple[str, ...] = DEFAULT_ID_COLUMNS) -> InputFormat:
    """The format of a file from its first bytes: a `{` opens JSON Lines; a first line that
    names an ID column (alone or among `,`, tab or `;` separated names) is a CSV header;
    anything else is a plain ID list (whose own checks then explain what is wrong with it)."""
    text = head.removeprefix(codecs.BOM_UTF8).lstrip(b" \t\r\n")
    if text.startswith(b"{"):
        return "jsonl"
    first = text.split(b"\n", 1)[0].strip(b"\r ").decode("utf-8", errors="replace")
    if first.isdigit():
        return "ids"
    wanted = {name.lower() for name in id_columns}
    for delimiter in (",", "\t", ";"):
        names = {cell.strip().strip('"').lower() for cell in first.split(delimiter)}
        if names & wanted:
            return "csv"
    return "ids"


def sniff_file(src: Path, display_name: str | None = None,
               id_columns: tuple[str, ...] = DEFAULT_ID_COLUMNS) -> InputFormat:
    with _open_regular(src, display_name or src.name) as inp:
        return detect_format(inp.read(_SNIFF_BYTES), id_columns)


def check_id(value: str | int | None) -> bytes | tuple[str, str]:
    """An ID as upload bytes, or why it is not one (a code and words)."""
    if isinstance(value, int):
        if 0 < value <= MAX_ID:
            return b"%d" % value
        return "out_of_range", f"{value} is not a positive 64-bit ID"
    if value is None:
        return "no_id", "no id"
    raw = value.strip().encode("utf-8", errors="backslashreplace")
    if raw.isdigit() and len(raw) <= MAX_ID_DIGITS and raw.isascii():
        return raw
    return classify_bad_id(raw) if raw else ("empty_id", "empty id")


@dataclass
class _Collector:
    """What a pass over one file has found so far, and its output."""

    out: BinaryIO
    name: str
    policy: Policy
    max_reported: int
    ids: int = 0
    blank: int = 0
    bad_count: int = 0
    out_bytes: int = 0
    bad: list[BadLine] = field(default_factory=list)
    out_hash: hashlib._Hash = field(default_factory=hashlib.sha256)
    # Written and hashed a few MB at a time: each write and each large update releases the
    # GIL, and with the reader thread beside us every release costs a switch back.
    pending: bytearray = field(default_factory=bytearray)

    def write(self, body: bytes, count: int) -> None:
        self.ids += count
        if self.bad_count and self.policy == "reject":
            return  # rejected anyway: only count from here on
        self.pending += body
        if len(self.pending) >= BLOCK_SIZE:
            self.flush()

    def flush(self) -> None:
        if self.bad_count and self.policy == "reject":
            self.pending.clear()
            return
        self.out.write(self.pending)
        self.out_hash.update(self.pending)
        self.out_bytes += len(self.pending)
        self.pending.clear()

    def bad_row(self, line_no: int, why: tuple[str, str], raw: bytes) -> None:
        self.bad_count += 1
        if len(self.bad) < self.max_reported:
            self.bad.append(BadLine(line_no, *why, excerpt(raw)))

    def verdict(self, what: str) -> None:
        self.flush()
        if self.bad_count and (self.policy == "reject" or not self.ids):
            first = self.bad[0]
            raise InputRejected(
                f"{self.name}: {self.bad_count} bad {what}(s); first at line {first.line_no}:"
                f" {first.message}",
                {"reason": "invalid_lines", "bad_lines": [b.as_dict() for b in self.bad],
                 "bad_line_count": self.bad_count},
            )
        if not self.ids:
            raise InputRejected(f"{self.name}: no ID in the file", {"reason": "empty"})


def _ids_of(line: _Line) -> list[str | int | None]:
    if line.id is not None:
        return [line.id]
    if isinstance(line.data, list):
        return [item.id for item in line.data]
    if line.data is not None:
        return [line.data.id]
    return []


def _jsonl_line(state: _Collector, raw: bytes, line_no: int) -> None:
    if not raw.strip():
        state.blank += 1
        return
    try:
        line = _DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        state.bad_row(line_no, ("not_a_record",
                                f"not a Tweet/User object or response page: {exc}"), raw)
        return
    except msgspec.DecodeError as exc:
        state.bad_row(line_no, ("not_json", f"not JSON: {exc}"), raw)
        return
    ids = _ids_of(line)
    if not ids and line.data is None and line.errors is None:
        state.bad_row(line_no, ("no_id", "a JSON object with no `id`, `data` or `errors` key"
                                " (not a Tweet or user object, nor an API response page)"), raw)
        return
    body = bytearray()
    for value in ids:
        checked = check_id(value)
        if isinstance(checked, tuple):
            state.bad_row(line_no, checked, raw)
            continue
        body += checked + b"\n"
    state.write(bytes(body), body.count(b"\n"))


class _LineNumbers:
    """The line number at a byte offset, counted only when one is needed (a bad row): on a
    clean file, counting every newline would cost a fifth of the time. Offsets asked for
    only grow, so the file is counted at most once, with pread (the reader is untouched)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.offset = 0  # counted up to here
        self.line = 1  # the line that starts at self.offset

    def at(self, offset: int) -> int:
        while self.offset < offset:
            piece = os.pread(self.fd, min(BLOCK_SIZE, offset - self.offset), self.offset)
            if not piece:
                break
            self.line += piece.count(b"\n")
            self.offset += len(piece)
        return self.line


def _jsonl_block(state: _Collector, block: bytes | memoryview,
                 first_line: Callable[[], int]) -> None:
    """Complete lines; decoded in one call when they are all fine (the common case), line by
    line only when one is not, so errors name their line (`first_line()` is the block's)."""
    try:
        flat = _FLAT_DECODER.decode_lines(block)
    except (msgspec.ValidationError, msgspec.DecodeError):
        flat = None
    if flat is not None:
        body = ("\n".join([item.id for item in flat]) + "\n").encode() if flat else b""
        if _CLEAN_IDS.fullmatch(body):
            state.write(body, len(flat))
            return
    lines = bytes(block).split(b"\n")[:-1]
    start = first_line()
    for offset, raw in enumerate(lines):
        _jsonl_line(state, raw, start + offset)


def _check_length(state: _Collector, line: bytes, line_no: Callable[[], int]) -> None:
    if len(line.rstrip(b"\r\n")) > MAX_JSON_LINE_BYTES:
        number = line_no()
        raise InputRejected(
            f"{state.name}: line {number} is longer than "
            f"{MAX_JSON_LINE_BYTES // 2**20} MiB: not JSON Lines",
            {"reason": "line_too_long", "line": number},
        )


def _hashed_blocks(inp: BinaryIO, block_size: int, in_hash: hashlib._Hash) -> Iterator[bytes]:
    """The file's blocks, read and hashed one block ahead in a thread: reading and sha256
    release the GIL, so they run on the other core while this one decodes JSON."""
    with ThreadPoolExecutor(1, thread_name_prefix="jsonl-read") as pool:

        def read() -> bytes:
            data = inp.read(block_size)
            in_hash.update(data)
            return data

        ahead = pool.submit(read)
        while chunk := ahead.result():
            ahead = pool.submit(read)
            yield chunk


def read_jsonl(inp: BinaryIO, state: _Collector, block_size: int,
               progress: Progress | None, in_hash: hashlib._Hash) -> int:
    numbers = _LineNumbers(inp.fileno())
    carry = b""  # the unfinished last line of the blocks so far
    carry_at = 0  # its offset in the file
    total = 0  # bytes read: the offset of the next chunk
    for chunk in _hashed_blocks(inp, block_size, in_hash):
        at = total
        total += len(chunk)
        if progress is not None:
            progress()
        if at == 0 and chunk.startswith(codecs.BOM_UTF8):
            chunk = chunk[len(codecs.BOM_UTF8):]
            at = len(codecs.BOM_UTF8)
        start = 0
        if carry:  # finish the carried line on its own: no copy of the whole block
            first_end = chunk.find(b"\n")
            line_at = carry_at
            if first_end < 0:
                carry += chunk
                _check_length(state, carry, partial(numbers.at, line_at))
                continue
            carry += chunk[: first_end + 1]
            _check_length(state, carry, partial(numbers.at, line_at))
            _jsonl_block(state, carry, partial(numbers.at, line_at))
            start = first_end + 1
        end = chunk.rfind(b"\n")
        block_at = at + start
        if end >= start:
            _jsonl_block(state, memoryview(chunk)[start : end + 1], partial(numbers.at, block_at))
        carry = chunk[max(end + 1, start) :]
        carry_at = at + max(end + 1, start)
        _check_length(state, carry, partial(numbers.at, carry_at))
    if carry:
        _jsonl_line(state, carry, numbers.at(carry_at))
    return total


class _HashingReader(io.RawIOBase):
    """The input as the csv module reads it, hashed and counted on the way."""

    def __init__(self, inp: BinaryIO, in_hash: hashlib._Hash, progress: Progress | None):
        self.inp, self.in_hash, self.progress, self.total = inp, in_hash, progress, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.inp.read(len(buffer))
        self.in_hash.update(data)
        self.total += len(data)
        if self.progress is not None and data:
            self.progress()
        buffer[: len(data)] = data
        return len(data)


def _delimiter(header_line: str) -> str:
    for candidate in ("\t", ",", ";"):
        if candidate in header_line:
            return candidate
    return ","


def read_csv(inp: BinaryIO, state: _Collector, id_columns: tuple[str, ...],
             progress: Progress | None, in_hash: hashlib._Hash) -> int:
    raw = _HashingReader(inp, in_hash, progress)
    text = io.TextIOWrapper(io.BufferedReader(raw, BLOCK_SIZE), encoding="utf-8-sig",
                            errors="strict", newline="")
    line_no = 1
    try:
        header_line = text.readline()
        delimiter = _delimiter(header_line)
        header = next(csv.reader([header_line], delimiter=delimiter), [])
        names = [cell.strip().lower() for cell in header]
        column = next((names.index(c.lower()) for c in id_columns if c.lower() in names), None)
        if column is None:
            shown = ", ".join(repr(c) for c in header[:10]) or "nothing"
            wanted = ", ".join(repr(c) for c in id_columns)
            raise InputRejected(
                f"{state.name}: line 1: the header names {shown}; expected a column named "
                f"{wanted}", {"reason": "no_id_column", "line": 1},
            )
        reader = csv.reader(text, delimiter=delimiter)
        out = bytearray()
        count = 0
        for row in reader:
            line_no = reader.line_num + 1  # the header was line 1
            if not row or (len(row) == 1 and not row[0].strip()):
                state.blank += 1
                continue
            checked = (check_id(row[column]) if column < len(row)
                       else ("no_id", "no value in the id column"))
            if isinstance(checked, tuple):
                state.bad_row(line_no, checked, delimiter.join(row).encode())
                continue
            out += checked
            out += b"\n"
            count += 1
            if len(out) >= BLOCK_SIZE:
                state.write(bytes(out), count)
                out.clear()
                count = 0
        state.write(bytes(out), count)
    except UnicodeDecodeError as exc:
        raise InputRejected(f"{state.name}: not UTF-8 text ({exc.reason})",
                            {"reason": "not_utf8"}) from None
    except csv.Error as exc:
        raise InputRejected(f"{state.name}: line {line_no + 1}: not valid CSV: {exc}",
                            {"reason": "invalid_lines", "line": line_no + 1}) from None
    finally:
        text.detach()
    return raw.total


def extract_ids(
    src: Path,
    dest: Path,
    fmt: Literal["jsonl", "csv"],
    *,
    policy: Policy = "reject",
    id_columns: tuple[str, ...] = DEFAULT_ID_COLUMNS,
    max_reported: int = 10,
    display_name: str | None = None,
    block_size: int = 0,
    progress: Progress | None = None,
) -> IdFileReport:
    """Read the IDs of a JSON Lines or CSV/TSV file into `dest` (one per line, atomically,
    fsynced). Raises InputRejected like `normalise_id_file` (reason invalid_lines | empty |
    not_utf8 | line_too_long | no_id_column); policy="drop" leaves bad rows out instead.
    `block_size` (0: the default) is for tests of block edges."""
    if policy not in ("reject", "drop"):
        raise ValueError(f"unknown policy {policy!r}")
    name = display_name or src.name
    in_hash = hashlib.sha256()
    with _open_regular(src, name) as inp, atomic_output(dest) as out:
        state = _Collector(out, name, policy, max_reported)
        if fmt == "jsonl":
            in_bytes = read_jsonl(inp, state, block_size or JSONL_BLOCK_SIZE, progress, in_hash)
            state.verdict("line")
        else:
            in_bytes = read_csv(inp, state, id_columns, progress, in_hash)
            state.verdict("row")
    return IdFileReport(
        id_count=state.ids,
        bad_line_count=state.bad_count,
        bad_lines=tuple(state.bad),
        input_bytes=in_bytes,
        input_sha256=in_hash.hexdigest(),
        output_bytes=state.out_bytes,
        output_sha256=state.out_hash.hexdigest(),
        blank_line_count=state.blank,
    )


def normalise_input(
    src: Path,
    dest: Path,
    *,
    fmt: str = "auto",
    id_columns: tuple[str, ...] = DEFAULT_ID_COLUMNS,
    policy: Policy = "reject",
    display_name: str | None = None,
    **options: Any,
) -> IdFileReport:
    """Any input a user may drop, as an upload body: a plain ID list (`validate_id_file`),
    JSON Lines or CSV/TSV, by `fmt` ("auto": detected from the first bytes)."""
    chosen = sniff_file(src, display_name, id_columns) if fmt == "auto" else fmt
    if chosen == "ids":  # a well-formed list is its own upload body: no copy (idfile.py)
        return validate_id_file(src, dest, policy=policy, display_name=display_name, **options)
    if chosen == "jsonl":
        reader: Literal["jsonl", "csv"] = "jsonl"
    elif chosen == "csv":
        reader = "csv"
    else:
        raise ValueError(f"unknown input format {fmt!r}")
    return extract_ids(src, dest, reader, policy=policy, id_columns=id_columns,
                       display_name=display_name, progress=options.get("progress"))
