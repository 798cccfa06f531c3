"""Result lines a block at a time: the fast path of normalising and counting result files.

Nearly every line X sends has one compact shape (`{"id":"…","action":"…","created_at":"…",
["redacted_at":"…",]"reason":"…"}`, plain ASCII values). A block of such lines (and blank
lines) is checked with one `translate` and one regex `findall` over the whole block, counted
from what the regex captured, and then copied as it is: no per-line Python objects, no parse.
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
# The documented reasons differ in their third letter: capturing just that letter yields
# one-byte strings, which CPython never allocates (they are cached singletons).
KNOWN_REASONS = ("deleted", "deactivated", "suspended", "protected", "scrub_geo", "bounced")
_BY_THIRD = tuple((reason[2:3].encode(), reason) for reason in KNOWN_REASONS)
assert len({third for third, _ in _BY_THIRD}) == len(KNOWN_REASONS)
# One match per line: `^` (multiline) anchors it at a line start, the possessive `?+` makes a
# blank line the empty match. Possessive quantifiers never backtrack, so a line that is not
# in the shape fails at once.
_KNOWN_LINES = re.compile(
    rb"^(?:" + _HEAD + rb"(?=(?:" + "|".join(KNOWN_REASONS).encode() + rb')")..(.)[^"]*+"\})?+\n',
    re.MULTILINE,
)
# Any plain reason (an undocumented one, or ""): the capture keeps the closing quote, so that
# an empty reason (b'"') differs from a blank line (b'').
_ANY_LINES = re.compile(rb"^(?:" + _HEAD + rb'([^"]{0,65536}+")\})?+\n', re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Region:
    """buf[start:end]: whole lines (ending with "\\n" unless `terminated` is False, the file's
    last line). `newlines`: their count if the bytes are known to be _PLAIN, else -1."""

    buf: bytes
    start: int
    end: int
    newlines: int = -1
    terminated: bool = True

    def data(self) -> bytes | memoryview:
        if self.start == 0 and self.end == len(self.buf):
            return self.buf
        return memoryview(self.buf)[self.start : self.end]  # no copy of a 1 MiB block

    def lines(self) -> list[bytes]:
        """The lines without their "\\n" (for the line-by-line path)."""
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
    carry = b""
    while chunk := stream.read(READ_BUFFER):
        first = chunk.find(b"\n")
        if first < 0:
            carry += chunk
            if len(carry) > limit:
                raise LineTooLong
            continue
        # One translate over the whole read: if only newlines are left, every line in it is
        # plain, and they are counted too.
        rest = chunk.translate(None, _PLAIN)
        plain = rest.count(b"\n") == len(rest)
        start = 0
        if carry:
            head, carry = carry + chunk[: first + 1], b""
            yield Region(head, 0, len(head))
            start = first + 1
        end = chunk.rfind(b"\n") + 1
        if end > start:
            # The head's newline is the only one before `start`; the tail after `end` has none.
            newlines = len(rest) - (1 if start else 0) if plain else -1
            yield Region(chunk, start, end, newlines)
        carry = chunk[end:]
        if len(carry) > limit:
            raise LineTooLong
    if carry:
        yield Region(carry, 0, len(carry), terminated=False)


def scan_region(region: Region) -> Scan | None:
    """Counts of a region whose every line is blank or in X's compact shape; None otherwise
    (the caller then goes line by line)."""
    newlines = region.newlines
    if newlines < 0:
        if not region.terminated:
            return None  # a last line without "\n": the line path adds it
        rest = region.buf[region.start : region.end].translate(None, _PLAIN)
        newlines = len(rest)
        if rest.count(b"\n") != newlines:
            return None
    # Every match starts at a line start and ends with a "\n", and matches never overlap. As
    # many matches as newlines means one per line, each a whole line (a value can hold no
    # newline: that match would contain two, leaving some newline without a match).
    found = _KNOWN_LINES.findall(region.buf, region.start, region.end)
    if len(found) == newlines:
        thirds = b"".join(found)  # blank lines captured b""
        by_reason = {reason: n for third, reason in _BY_THIRD if (n := thirds.count(third))}
        return Scan(newlines, newlines - len(thirds), by_reason)
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
