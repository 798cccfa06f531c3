"""Validate an ID file while streaming it, and write the normalised upload body.

Pure, synchronous file processing (the daemon runs it in a worker thread). A well-formed file
(digits and `\\n` only) is checked a block at a time with C-speed bytes methods and copied as
is; only blocks that need normalising (CRLF, spaces, blank lines, bad lines) go line by line.
Memory stays bounded by the block size, whatever the file holds.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import hashlib
import os
import queue
import re
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, cast

from orchestrator.errors import InputRejected
from orchestrator.files.atomic import COPY_BUFFER, Progress, atomic_output

BLOCK_SIZE = 4 * 1024 * 1024
MAX_ID_DIGITS = 19  # IDs are 64-bit snowflakes: at most 19 decimal digits
MAX_LINE_BYTES = 4096  # an ID line is ~20 bytes; anything this long is not a list of IDs
EXCERPT_CHARS = 40

_DIGITS = b"0123456789"
# A block already known to hold only digits and newlines is clean when every line has 1-19
# of them. Possessive, so a 20th digit fails at once instead of backtracking; `[^\n]` is a
# tight C loop in `re`, far faster than a character class.
_CLEAN_LINES = re.compile(rb"(?:[^\n]{1,%d}+\n)*+" % MAX_ID_DIGITS)
_NEGATIVE = re.compile(rb"-[0-9]+")
_SIGNED = re.compile(rb"\+[0-9]+")
_EXPONENT = re.compile(rb"[+-]?[0-9]*\.?[0-9]+[eE][+-]?[0-9]+")
_DECIMAL = re.compile(rb"[+-]?[0-9]*\.[0-9]+|[+-]?[0-9]+\.")
# 0x-prefixed, or a mix of digits and a-f letters (plain words stay "not a number").
_HEX = re.compile(rb"0[xX][0-9a-fA-F]+|(?=[a-fA-F]*[0-9])(?=[0-9]*[a-fA-F])[0-9a-fA-F]+")
_QUOTED = re.compile(rb"([\"'])[0-9]+\1,?")
_SEPARATOR = re.compile(rb"[,;|\s]")

Policy = Literal["reject", "drop"]


@dataclass(frozen=True)
class BadLine:
    line_no: int
    reason: str  # a code: "hexadecimal", "decimal", "line_too_long", ... (BAD_LINE_CODES)
    message: str  # the same in words an operator can act on
    excerpt: str  # at most EXCERPT_CHARS printable characters (+ "…")

    def as_dict(self) -> dict[str, object]:
        return {"line": self.line_no, "reason": self.reason, "message": self.message,
                "excerpt": self.excerpt}


@dataclass(frozen=True)
class IdFileReport:
    id_count: int
    bad_line_count: int
    bad_lines: tuple[BadLine, ...]  # the first `max_reported`
    input_bytes: int
    input_sha256: str
    output_bytes: int
    output_sha256: str
    blank_line_count: int = 0
    # The body is the input byte for byte (a well-formed file): with `dest=None` nothing was
    # written and the input itself is the upload body.
    body_is_input: bool = False


def excerpt(raw: bytes, limit: int = EXCERPT_CHARS) -> str:
    """A short, printable rendering of a line (safe to log, to put in JSON, to repr)."""
    text = raw[: limit * 4].decode("utf-8", errors="backslashreplace")
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if len(shown) > limit or len(raw) > limit * 4:
        return shown[:limit] + "…"
    return shown


def classify_bad_id(value: bytes) -> tuple[str, str]:
    """Why a (stripped, non-blank) line is not an ID: a code, and words an operator can act
    on."""
    shown = repr(excerpt(value))
    if value.isdigit():
        return ("too_many_digits",
                f"{len(value)} digits, more than the {MAX_ID_DIGITS} an ID can have")
    if value[:1] in (b"{", b"["):
        return "json", f"JSON, not a plain list of IDs (one per line): {shown}"
    if _QUOTED.fullmatch(value):
        return "quoted", f"quoted, write the digits only: {shown}"
    if _NEGATIVE.fullmatch(value):
        return "negative", f"negative number, IDs are positive: {shown}"
    if _SIGNED.fullmatch(value):
        return "signed", f"signed number, write the digits only: {shown}"
    if _EXPONENT.fullmatch(value):
        return ("exponent",
                f"number in exponent notation (digits lost, e.g. by a spreadsheet): {shown}")
    if _DECIMAL.fullmatch(value):
        return "decimal", f"decimal number, IDs are whole numbers: {shown}"
    if _HEX.fullmatch(value):
        return "hexadecimal", f"hexadecimal, IDs are decimal: {shown}"
    if _SEPARATOR.search(value):
        return "several_values", f"more than one value on the line, put one ID per line: {shown}"
    return "not_a_number", f"not a number: {shown}"


def describe_bad_id(value: bytes) -> str:
    """classify_bad_id's words alone."""
    return classify_bad_id(value)[1]


class _Normaliser:
    """State of one pass over one file."""

    def __init__(self, out: BinaryIO, name: str, policy: Policy, max_reported: int) -> None:
        self.out = out
        self.name = name
        self.policy = policy
        self.max_reported = max_reported
        self.line_no = 0  # complete lines seen so far (blank ones included)
        self.ids = 0
        self.blank = 0
        self.bad_count = 0
        self.bad: list[BadLine] = []
        self.out_bytes = 0
        # While every write copies input bytes as they are, the body's hash is the input's
        # (computed anyway): a clean file is hashed once. See output_sha256().
        self.verbatim = True
        # Past an over-long line's first MAX_LINE_BYTES we only look for its end.
        self.skipping = False
        self.skip_decoder = codecs.getincrementaldecoder("utf-8")()

    # -- output ---------------------------------------------------------------------------

    def write(self, data: bytes, *, verbatim: bool = True) -> None:
        """`verbatim`: `data` is the very next run of input bytes, unchanged."""
        if self.bad_count and self.policy == "reject":
            return  # the file is rejected anyway; keep validating only to count
        self.out.write(data)
        self.out_bytes += len(data)
        self.verbatim = self.verbatim and verbatim

    def output_sha256(self, in_bytes: int, in_sha256: str, progress: Progress | None) -> str:
        """The body's sha256. Writes are in input order and never overlap, so if all were
        verbatim and they add up to the input's length, the body *is* the input. Otherwise
        (something was stripped, dropped or added) the body is hashed from the file."""
        if self.verbatim and self.out_bytes == in_bytes:
            return in_sha256
        self.out.flush()
        digest = hashlib.sha256()
        fd, offset = self.out.fileno(), 0
        while block := os.pread(fd, COPY_BUFFER, offset):
            digest.update(block)
            offset += len(block)
            if progress is not None:
                progress()
        return digest.hexdigest()

    # -- errors ---------------------------------------------------------------------------

    def reject(self, reason: str, message: str, **details: object) -> InputRejected:
        return InputRejected(f"{self.name}: {message}", {"reason": reason, **details})

    def check_binary(self, chunk: bytes, *, first: bool) -> None:
        """NUL bytes anywhere in a block mean binary, whatever came earlier in that block."""
        nul = chunk.find(b"\x00")
        if nul < 0:
            return
        # The line in progress is line_no+1, or line_no itself while skipping an over-long one.
        line_no = self.line_no + chunk.count(b"\n", 0, nul) + (0 if self.skipping else 1)
        hint = ""
        if first and chunk[:2] in (b"\xff\xfe", b"\xfe\xff"):
            hint = " (it looks like UTF-16: save it as UTF-8 text)"
        raise self.reject(
            "binary", f"binary content (NUL bytes) at line {line_no}{hint}", line=line_no
        )

    def check_text(self, data: bytes, line_no: int) -> None:
        """Non-UTF-8 content rejects the whole file (NUL bytes were checked per block)."""
        if not data.isascii():
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                raise self.reject(
                    "not_utf8", f"not UTF-8 text at line {line_no}", line=line_no
                ) from None

    def add_bad(self, line_no: int, why: tuple[str, str], raw: bytes) -> None:
        self.bad_count += 1
        if len(self.bad) < self.max_reported:
            self.bad.append(BadLine(line_no, *why, excerpt(raw)))

    # -- lines ----------------------------------------------------------------------------

    def line(self, raw: bytes, *, terminated: bool = True) -> None:
        """One complete line, without its `\\n` (`terminated`: it had one)."""
        self.line_no += 1
        self.check_text(raw, self.line_no)
        if len(raw) > MAX_LINE_BYTES:
            self.too_long(raw)
            return
        value = raw.strip()  # spaces, tabs, CR (and other ASCII whitespace)
        if not value:
            self.blank += 1
        elif value.isdigit() and len(value) <= MAX_ID_DIGITS:
            self.ids += 1
            self.write(value + b"\n", verbatim=terminated and len(value) == len(raw))
        else:
            self.add_bad(self.line_no, classify_bad_id(value), value)

    def block(self, data: bytes) -> None:
        """Complete lines (`data` ends with `\\n`): bulk-checked, copied as is when clean."""
        if self.clean_block(data):
            return
        if b"\r" in data and self.clean_block(data.replace(b"\r\n", b"\n"), verbatim=False):
            return  # a clean file with Windows line ends: still the bulk path
        lines = data.split(b"\n")
        lines.pop()  # the empty piece after the final "\n"
        for raw in lines:
            self.line(raw)

    def clean_block(self, data: bytes, *, verbatim: bool = True) -> bool:
        """Copy `data` if it is only lines of 1-19 digits, checked in bulk; else False."""
        # One pass checks the bytes and counts the lines: what is left once the digits are
        # gone must be newlines only (a twentieth of the block for 19-digit IDs).
        newlines = data.translate(None, _DIGITS)
        count = len(newlines)
        if newlines.translate(None, b"\n"):
            return False
        width = data.find(b"\n")
        # IDs of one length (the usual case: 19-digit snowflakes): if every width+1-th byte
        # is a newline and there are no others, every line has `width` digits. A strided
        # slice is a C loop over one byte per line; otherwise the regex checks each line.
        fixed = (0 < width <= MAX_ID_DIGITS and len(data) == count * (width + 1)
                 and data[width :: width + 1].count(b"\n") == count)
        if not fixed and _CLEAN_LINES.fullmatch(data) is None:
            return False
        self.line_no += count
        self.ids += count
        self.write(data, verbatim=verbatim)
        return True

    def too_long(self, head: bytes) -> None:
        """A line longer than MAX_LINE_BYTES (`head` is its start); its text is checked."""
        if self.policy == "reject":
            raise self.reject(
                "line_too_long",
                f"line {self.line_no} is longer than {MAX_LINE_BYTES} bytes: not a list of IDs",
                line=self.line_no,
                max_line_bytes=MAX_LINE_BYTES,
            )
        self.add_bad(self.line_no, ("line_too_long",
                                    f"line longer than {MAX_LINE_BYTES} bytes, not an ID"), head)

    def start_skipping(self, head: bytes) -> None:
        """The unfinished line in the carry is over-long: report it now, drop the rest."""
        self.line_no += 1
        self.skip_decoder.reset()
        self.skip_part(head)  # incremental: head may end inside a UTF-8 sequence
        self.too_long(head)
        self.skipping = True

    def skip_part(self, part: bytes) -> None:
        try:
            self.skip_decoder.decode(part)
        except UnicodeDecodeError:
            raise self.reject(
                "not_utf8", f"not UTF-8 text at line {self.line_no}", line=self.line_no
            ) from None

    def finish_skipping(self) -> None:
        try:
            self.skip_decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise self.reject(
                "not_utf8", f"not UTF-8 text at line {self.line_no}", line=self.line_no
            ) from None
        self.skipping = False

    # -- the end --------------------------------------------------------------------------

    def verdict(self) -> None:
        if self.bad_count and (self.policy == "reject" or not self.ids):
            plural = "s" if self.bad_count != 1 else ""
            where = ""
            if self.bad:
                first = f"line {self.bad[0].line_no}: {self.bad[0].message}"
                numbers = ", ".join(str(b.line_no) for b in self.bad[:5])
                where = (
                    f" ({first})"
                    if self.bad_count == 1
                    else f" (first at lines {numbers}; {first})"
                )
            what = "no valid ID left" if self.policy == "drop" else "rejected whole"
            raise self.reject(
                "invalid_lines",
                f"{self.bad_count} invalid line{plural}{where}; {what}",
                bad_lines=[b.as_dict() for b in self.bad],
                bad_line_count=self.bad_count,
            )
        if not self.ids:
            raise self.reject("empty", "no IDs: the file is empty or has only blank lines")


def _open_regular(src: Path, name: str) -> BinaryIO:
    """Open `src` for reading only if it is a regular file (a fifo would block forever)."""
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        fd = -1
    if fd < 0 or not stat.S_ISREG(os.fstat(fd).st_mode):
        if fd >= 0:
            os.close(fd)
        raise InputRejected(
            f"{name}: not a regular file (symlink, fifo or device)", {"reason": "not_a_file"}
        )
    return os.fdopen(fd, "rb")


class _HashThread(threading.Thread):
    """sha256 of the blocks handed to update(), computed in a second thread: hashlib releases
    the GIL, so hashing overlaps the checks of the next block (at most `depth` blocks wait)."""

    def __init__(self, depth: int = 1) -> None:
        super().__init__(name="sha256", daemon=True)
        self._blocks: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self._digest = hashlib.sha256()
        self._done = False
        self.start()

    def run(self) -> None:
        while (block := self._blocks.get()) is not None:
            self._digest.update(block)

    def update(self, block: bytes) -> None:
        self._blocks.put(block)

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._blocks.put(None)
            self.join()

    def hexdigest(self) -> str:
        self.close()
        return self._digest.hexdigest()


class _Counting:
    """The output of a check-only pass (`dest=None`): bytes are counted, not kept."""

    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass


def normalise_id_file(
    src: Path,
    dest: Path | None,
    *,
    policy: Policy = "reject",
    max_reported: int = 10,
    display_name: str | None = None,
    block_size: int = BLOCK_SIZE,
    progress: Progress | None = None,
) -> IdFileReport:
    """Validate `src` and write `dest` (one ID per line, `\\n`), atomically and fsynced.

    Raises InputRejected (details["reason"]: invalid_lines | empty | binary | not_utf8 |
    line_too_long); with policy="drop" bad lines are left out and reported instead, unless no
    valid ID remains. `display_name` (default: src's basename) is what messages call the file.
    `dest=None`: check only, write nothing; if the body would not be the input byte for byte
    (`body_is_input` False), `output_sha256` is "" and a second pass with a `dest` is needed.
    `progress()` is called after every block (a 2 GB input is minutes of work).
    """
    if policy not in ("reject", "drop"):
        raise ValueError(f"unknown policy {policy!r}")
    in_bytes = 0
    name = display_name or src.name
    with _open_regular(src, name) as inp, _output(dest) as out, _hashing() as in_hash:
        state = _Normaliser(out, name, policy, max_reported)
        carry = b""  # the unfinished last line of the previous block (at most MAX_LINE_BYTES)
        first = True
        # The first read is at least as long as a BOM, so a tiny block size cannot split it.
        while chunk := inp.read(max(block_size, len(codecs.BOM_UTF8)) if first else block_size):
            in_hash.update(chunk)
            in_bytes += len(chunk)
            if progress is not None:
                progress()
            state.check_binary(chunk, first=first)
            if first:
                first = False
                if chunk.startswith(codecs.BOM_UTF8):
                    chunk = chunk[len(codecs.BOM_UTF8) :]
            if state.skipping:
                end = chunk.find(b"\n")
                state.skip_part(chunk if end < 0 else chunk[:end])
                if end < 0:
                    continue
                state.finish_skipping()
                chunk = chunk[end + 1 :]
            start = chunk.find(b"\n")
            if start < 0:
                carry += chunk
                if len(carry) > MAX_LINE_BYTES:
                    state.start_skipping(carry)
                    carry = b""
                continue
            state.line(carry + chunk[:start])
            end = chunk.rfind(b"\n")
            if end > start:
                state.block(chunk[start + 1 : end + 1])
            carry = chunk[end + 1 :]
            if len(carry) > MAX_LINE_BYTES:
                state.start_skipping(carry)
                carry = b""
        if state.skipping:
            state.finish_skipping()
        elif carry:
            state.line(carry, terminated=False)  # a last line without "\n"
        state.verdict()
        body_is_input = state.verbatim and state.out_bytes == in_bytes
        output_sha256 = (state.output_sha256(in_bytes, in_hash.hexdigest(), progress)
                         if dest is not None or body_is_input else "")
    return IdFileReport(
        id_count=state.ids,
        bad_line_count=state.bad_count,
        bad_lines=tuple(state.bad),
        input_bytes=in_bytes,
        input_sha256=in_hash.hexdigest(),
        output_bytes=state.out_bytes,
        output_sha256=output_sha256,
        blank_line_count=state.blank,
        body_is_input=body_is_input,
    )


@contextlib.contextmanager
def _hashing() -> Iterator[_HashThread]:
    hasher = _HashThread()
    try:
        yield hasher
    finally:
        hasher.close()  # also when validation stops early: the thread ends with it


@contextlib.contextmanager
def _output(dest: Path | None) -> Iterator[BinaryIO]:
    if dest is None:
        yield cast(BinaryIO, _Counting())
        return
    with atomic_output(dest) as out:
        yield out


def validate_id_file(src: Path, dest: Path, **options: Any) -> IdFileReport:
    """normalise_id_file without the copy where none is needed: a file whose body is itself
    (the common case) is read once and nothing is written (`body_is_input`); any other is
    read a second time to write the normalised body to `dest`."""
    report = normalise_id_file(src, None, **options)
    if report.body_is_input:
        return report
    return normalise_id_file(src, dest, **options)
