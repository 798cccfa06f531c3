"""Turn a downloaded result file (JSON Lines from X) into the outbox's normalised `.jsonl`.

The download is checked line by line: anything that is not a JSON object with a string `id`
of digits means a corrupt transfer, which is retried and never delivered (IntegrityError).
Blocks of lines in X's own compact shape (nearly every line) are checked, counted and copied
a block at a time (resultblocks.py); only the other blocks are parsed line by line.
Blank lines (real result files contain them) are dropped; everything else is kept: field
values untouched (timestamps in either style), unknown reasons and extra fields included,
in download order. Output is one compact JSON object per line.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from orchestrator.errors import IntegrityError
from orchestrator.files.atomic import Progress, atomic_output
from orchestrator.files.resultblocks import (
    MAX_RESULT_LINE_BYTES,
    NO_REASON,
    READ_BUFFER,
    LineCutter,
    LineTooLong,
    Region,
    drop_blank_lines,
    report_progress,
    scan_region,
)
from orchestrator.files.writebehind import WriteBehind

__all__ = [
    "MAX_RESULT_LINE_BYTES", "NO_REASON", "PROGRESS_LINES", "ResultReport", "ResultStream",
    "iter_results",
    "line_reason", "normalise_results", "parse_result_line", "reason_key",
]

PROGRESS_LINES = 16384  # line loops call progress() once per this many lines


# The exact compact shape X writes, with plain ASCII string values (no escapes). A line that
# matches is already what json.dumps would produce, so it is copied without a parse.
_S = rb'"[ !#-\[\]-~]*"'
_CANONICAL = re.compile(
    rb'\{"id":"[0-9]+","action":'
    + _S
    + rb',"created_at":'
    + _S
    + rb'(?:,"redacted_at":'
    + _S
    + rb')?,"reason":"([ !#-\[\]-~]*)"\}'
)


@dataclass(frozen=True)
class ResultReport:
    affected: int
    by_reason: dict[str, int]
    output_bytes: int
    output_sha256: str
    blank_lines: int


def parse_result_line(body: bytes, line_no: int) -> dict[str, Any]:
    """Parse one non-blank line; IntegrityError names the line when it is not a result."""
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        kind = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else "not valid JSON"
        raise IntegrityError(f"result line {line_no} is {kind} (corrupt download?)") from None
    if not isinstance(obj, dict):
        raise IntegrityError(f"result line {line_no} is not a JSON object")
    ident = obj.get("id")
    if not (isinstance(ident, str) and ident.isascii() and ident.isdigit()):
        raise IntegrityError(f'result line {line_no} has no string "id" of digits')
    return obj


def reason_key(obj: dict[str, Any]) -> str:
    """The by_reason key of a result object: its top-level "reason" string, NO_REASON when
    null or missing, other values as JSON. Every counting path must use this spelling."""
    reason = obj.get("reason")
    if isinstance(reason, str):
        return reason
    return NO_REASON if reason is None else json.dumps(reason)


def line_reason(body: bytes) -> str:
    """`reason_key` of one non-blank, compact result line (as `normalise_results` wrote it).

    The canonical shape is matched as a whole, so its reason is the top-level one; any other
    line is parsed (a nested object may have a "reason" key of its own).
    """
    match = _CANONICAL.fullmatch(body)
    if match:
        return match.group(1).decode("ascii")
    obj = json.loads(body)
    return reason_key(obj) if isinstance(obj, dict) else NO_REASON


def _compact(obj: dict[str, Any]) -> bytes:
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:  # a lone surrogate escape ("\ud800"): keep it escaped
        return json.dumps(obj, separators=(",", ":")).encode("ascii") + b"\n"


class _Normaliser:
    """What one pass over a download has written and counted so far. The writing and the
    sha256 are done by a helper thread (WriteBehind), in order."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = WriteBehind(out)
        self.by_reason: Counter[str] = Counter()
        self.affected = self.blank = self.out_bytes = self.line_no = 0

    def write(self, data: bytes | memoryview) -> None:
        self.out.put(data)
        self.out_bytes += len(data)

    def region(self, region: Region) -> int:
        """Check, count and write one region; returns its number of lines."""
        scan = scan_region(region)
        if scan is not None:  # X's shape throughout: copied, blank lines cut out
            self.write(region.data() if scan.blank == 0 else drop_blank_lines(region.data()))
            self.by_reason.update(scan.by_reason)
            self.affected += scan.lines - scan.blank
            self.blank += scan.blank
            return scan.lines
        lines = region.lines()
        written = [
            self.line(line, offset, len(line) + region.terminated)
            for offset, line in enumerate(lines, start=self.line_no + 1)
        ]
        self.write(b"".join(written))  # one hand-off per region, not per line
        return len(lines)

    def line(self, line: bytes, line_no: int, length: int) -> bytes:
        """The normalised line ("\n" included; b"" for a blank line)."""
        if length > MAX_RESULT_LINE_BYTES:
            raise _too_long(line_no)
        body = line.strip()
        if not body:
            self.blank += 1
            return b""
        match = _CANONICAL.fullmatch(body)
        if match:
            self.by_reason[match.group(1).decode("ascii")] += 1
            out = body + b"\n"
        else:
            obj = parse_result_line(body, line_no)
            self.by_reason[reason_key(obj)] += 1
            out = _compact(obj)
        self.affected += 1
        return out


def _too_long(line_no: int) -> IntegrityError:
    return IntegrityError(f"result line {line_no} is longer than {MAX_RESULT_LINE_BYTES} bytes")


class ResultStream:
    """A result body normalised as it arrives, block by block, into `dest` (atomically).

    `begin()` starts (or starts over: what was fed before is discarded), `feed()` takes the
    body's bytes in order in pieces of any size, `finish()` writes the last line, fsyncs and
    renames into place, `abort()` drops the temp file. A line that is not a result raises
    IntegrityError from `feed()` or `finish()`, naming its line. Not thread-safe: one thread
    at a time (the download's worker thread) calls it.
    """

    def __init__(self, dest: Path, progress: Progress | None = None) -> None:
        self.dest = dest
        self.progress = progress
        self._output: contextlib.ExitStack | None = None
        self._state: _Normaliser | None = None
        self._cutter = LineCutter()

    def begin(self) -> None:
        self.abort()
        stack = contextlib.ExitStack()
        out = stack.enter_context(atomic_output(self.dest))
        self._output, self._state, self._cutter = stack, _Normaliser(out), LineCutter()

    def feed(self, block: bytes) -> None:
        state = self._state
        assert state is not None, "feed() before begin()"
        try:
            for region in self._cutter.push(block):
                self._region(state, region)
        except LineTooLong:
            raise _too_long(state.line_no + 1) from None

    def finish(self) -> ResultReport:
        state, stack = self._state, self._output
        assert state is not None and stack is not None, "finish() before begin()"
        for region in self._cutter.end():
            self._region(state, region)
        state.out.close()  # every block written and hashed
        self._output = self._state = None
        stack.close()  # flush, fsync, rename into place, fsync the folder
        return ResultReport(
            affected=state.affected,
            by_reason=dict(state.by_reason),
            output_bytes=state.out_bytes,
            output_sha256=state.out.hash.hexdigest(),
            blank_lines=state.blank,
        )

    def abort(self) -> None:
        """Drop what was written (the temp file); `dest` stays as it was."""
        stack, state = self._output, self._state
        self._output = self._state = None
        if state is not None:
            with contextlib.suppress(Exception):
                state.out.close()  # the helper is done with the file before it goes
        if stack is not None:
            with contextlib.suppress(_Aborted):
                stack.__exit__(_Aborted, _Aborted(), None)

    def _region(self, state: _Normaliser, region: Region) -> None:
        lines = state.region(region)
        report_progress(self.progress, PROGRESS_LINES, state.line_no, state.line_no + lines)
        state.line_no += lines


class _Aborted(Exception):
    """Thrown into the temp file's context so that it is removed, not placed."""


def normalise_results(raw: Path, dest: Path, progress: Progress | None = None) -> ResultReport:
    """Check `raw` and write `dest` (compact JSON Lines, blank lines dropped), atomically.

    Raises IntegrityError on the first line that is not a result object (nothing is written).
    `progress()` is called every PROGRESS_LINES lines.
    """
    stream = ResultStream(dest, progress)
    with open(raw, "rb", buffering=0) as inp:
        stream.begin()
        try:
            while chunk := inp.read(READ_BUFFER):
                stream.feed(chunk)
            return stream.finish()
        finally:
            stream.abort()


def iter_results(path: Path) -> Iterator[dict[str, Any]]:
    """Stream the objects of a normalised result file (for splitting and tests)."""
    with open(path, "rb", buffering=READ_BUFFER) as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
