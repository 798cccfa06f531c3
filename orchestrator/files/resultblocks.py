"""Result lines a block at a time: the fast path of normalising and counting result files.

Nearly every line X sends has one compact shape (`{"id":"…","action":"…","created_at":"…",
["redacted_at":"…",]"reason":"…"}`, plain ASCII values). A block of such lines is checked
with one `translate` and one regex `fullmatch` over the whole block, counted with a few
`bytes.count` on the little the translate kept, and then copied as it is: no per-line Python
objects, no parse. Blocks with blank lines or undocumented reasons take a regex `findall`
(one small capture per line) instead.
Any other block is handed back to the caller's line-by-line path, which decides what each
line is (results.py: a corrupt line is an IntegrityError naming it).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from orchestrator.files.atomic import Progress

MAX_RESULT_LINE_BYTES = 1024 * 1024  # a result object is ~150 bytes
READ_BUFFER = 256 * 1024  # fits the L2 cache: the passes over a block stay there
NO_REASON = "(none)"  # by_reason key for objects without a string "reason"

# What a fast-path line may hold besides its "\n": printable ASCII without the backslash. So
# no escapes, control characters or non-ASCII text (the line path keeps or rejects those), and
# a string value is simply everything up to the next quote.
_PLAIN = bytes(range(0x20, 0x7F)).replace(b"\\", b"")
# Each value at most 64 KiB, so a line matched here is always under MAX_RESULT_LINE_BYTES.
_VALUE = rb'"[^"]{0,65536}+"'
_HEAD = (
    rb'\{"id":"[0-9]{1,64}+","action":' + _VALUE + rb',"created_at":' + _VALUE
    + rb'(?:,"redacted_at":' + _VALUE + rb')?+,"reason":"'
)
KNOWN_REASONS = ("deleted", "deactivated", "suspended", "protected", "scrub_geo", "bounced")
# Lines exactly as X writes them (action "delete", timestamps of digits and -+.:TZ, a
# documented reason), no blank line: one fullmatch checks a whole block. No value can then
# hold a newline, so each repetition is one line. Possessive quantifiers never backtrack, so
# a line not in the shape fails at once.
_TIME = rb'"[-+.0-9:TZ]{0,64}+"'
_X_BLOCK = re.compile(
    rb'(?:\{"id":"[0-9]{1,64}+","action":"delete","created_at":' + _TIME
    + rb'(?:,"redacted_at":' + _TIME + rb')?+,"reason":"(?:'
    + "|".join(KNOWN_REASONS).encode() + rb')"\}\n)*+'
)
# Counting without a pass per reason: the translate that checks the bytes also keeps these
# letters, which in such a block only the reasons hold (not the keys, "delete", digits or
# timestamps), one of each at most per reason. From how often each occurs (a tiny residue:
# a few bytes per line), the count of every reason follows; "deleted" holds none of them.
_LETTERS = b"vupbg"
_LETTERS_NL = _LETTERS + b"\n"
_DROP = bytes(c for c in _PLAIN if c not in _LETTERS)
_LETTERS_OF = {reason: bytes(c for c in reason.encode() if c in _LETTERS)
               for reason in KNOWN_REASONS}
assert _LETTERS_OF == {"deleted": b"", "deactivated": b"v", "suspended": b"up",
                       "protected": b"p", "scrub_geo": b"ubg", "bounced": b"bu"}


def _reasons_from_letters(residue: bytes, lines: int) -> dict[str, int]:
    """Per reason, the lines of an _X_BLOCK block, from the letters its residue holds."""
    v, u, p, b, g = (residue.count(letter) for letter in (b"v", b"u", b"p", b"b", b"g"))
    counts = {"deactivated": v, "scrub_geo": g, "bounced": b - g, "suspended": u - b}
    counts["protected"] = p - counts["suspended"]
    counts["deleted"] = lines - sum(counts.values())
    return {reason: n for reason, n in counts.items() if n}


# Any other block of plain lines (blank lines, undocumented reasons, an empty one): one match
# per line, `^` (multiline) anchoring it at a line start, a blank line the empty match. The
# capture keeps the closing quote, so an empty reason (b'"') differs from a blank line (b'').
_ANY_LINES = re.compile(rb"^(?:" + _HEAD + rb'([^"]{0,65536}+")\})?+\n', re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Region:
    """buf[start:end]: whole lines (ending with "\n" unless `terminated` is False, the file's
    last line). `residue`: their bytes less _DROP, if already known."""

    buf: bytes
    start: int
    end: int
    residue: bytes | None = None
    terminated: bool = True

    def data(self) -> bytes | memoryview:
        if self.start == 0 and self.end == len(self.buf):
            return self.buf
        return memoryview(self.buf)[self.start : self.end]  # no copy of the block

    def lines(self) -> list[bytes]:
        """The lines without their "\n" (for the line-by-line path)."""
        pieces = self.buf[self.start : self.end].split(b"\n")
        if self.terminated:
            pieces.pop()  # the empty piece after the final "\n"
        return pieces


@dataclass(frozen=True, slots=True)
class Scan:
    lines: int
    blank: int
    by_reason: dict[str, int]


class LineTooLong(Exception):
    """The line after the regions yielded so far is longer than the limit (the caller knows
    its number)."""


def regions(stream: BinaryIO, limit: int = MAX_RESULT_LINE_BYTES) -> Iterator[Region]:
    """The stream cut into regions of whole lines, one or two per read (a line that spans two
    reads is a small region of its own). Reads return what is there (a FIFO's round, too).
    An unfinished line longer than `limit` raises LineTooLong.
    """
    cutter = LineCutter(limit)
    while chunk := stream.read(READ_BUFFER):
        yield from cutter.push(chunk)
    yield from cutter.end()


class LineCutter:
    """Bytes pushed in pieces of any size (a file's reads, a socket's), cut into regions of
    whole lines: one or two per piece, a line that spans pieces being a small region of its
    own. An unfinished line longer than `limit` raises LineTooLong."""

    __slots__ = ("carry", "limit")

    def __init__(self, limit: int = MAX_RESULT_LINE_BYTES) -> None:
        self.limit = limit
        self.carry = b""

    def push(self, chunk: bytes) -> Iterator[Region]:
        first = chunk.find(b"\n")
        if first < 0:
            self.carry += chunk
            if len(self.carry) > self.limit:
                raise LineTooLong
            return
        # One translate over the whole piece (newlines, letters and bytes not _PLAIN are
        # left); its residue is cut to the body's lines below (the head's newline is the
        # first one, the tail after the last has none).
        residue = chunk.translate(None, _DROP)
        start = 0
        if self.carry:
            head, self.carry = self.carry + chunk[: first + 1], b""
            yield Region(head, 0, len(head))
            start = first + 1
        end = chunk.rfind(b"\n") + 1
        if end > start:
            cut = residue.find(b"\n") + 1 if start else 0
            yield Region(chunk, start, end, residue[cut : residue.rfind(b"\n") + 1])
        self.carry = chunk[end:]
        if len(self.carry) > self.limit:
            raise LineTooLong

    def end(self) -> Iterator[Region]:
        """The last line, when the bytes did not end with "\n"."""
        if self.carry:
            carry, self.carry = self.carry, b""
            yield Region(carry, 0, len(carry), terminated=False)


def scan_region(region: Region) -> Scan | None:
    """Counts of a region whose every line is blank or in X's compact shape; None otherwise
    (the caller then goes line by line)."""
    if not region.terminated:
        return None  # a last line without "\n": the line path adds it
    residue = region.residue
    if residue is None:
        residue = region.buf[region.start : region.end].translate(None, _DROP)
    if residue.translate(None, _LETTERS_NL):
        return None  # a byte that is not _PLAIN
    newlines = residue.count(b"\n")
    if _X_BLOCK.fullmatch(region.buf, region.start, region.end):
        return Scan(newlines, 0, _reasons_from_letters(residue, newlines))
    # Every match starts at a line start and ends with a "\n", and matches never overlap: as
    # many matches as newlines means one per line, each a whole line.
    found = _ANY_LINES.findall(region.buf, region.start, region.end)
    if len(found) != newlines:
        return None
    counts = Counter(found)
    blank = counts.pop(b"", 0)
    return Scan(newlines, blank, {key[:-1].decode("ascii"): n for key, n in counts.items()})


def drop_blank_lines(data: bytes | memoryview) -> bytes:
    """`data` (whole lines, each blank or an object) without its blank lines."""
    out = bytes(data)
    while b"\n\n" in out:
        out = out.replace(b"\n\n", b"\n")
    return out[1:] if out.startswith(b"\n") else out


def report_progress(progress: Progress | None, every: int, before: int, after: int) -> None:
    """progress() once per `every` lines, wherever the regions fell."""
    if progress is not None:
        for _ in range(after // every - before // every):
            progress()
