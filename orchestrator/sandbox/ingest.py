"""Turns an uploaded ID file into result components, chunk by chunk, on disk.

Runs in a worker thread (callers use `asyncio.to_thread`): each `feed()` handles a few MB at
once with bulk bytes operations (split, isdigit, CRC selection), so 10M-ID uploads stay fast
and memory stays flat. The raw upload is kept as the stored object, with its MD5 and CRC32C
for the `etag` / `x-goog-hash` headers GCS returns.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import google_crc32c

from orchestrator.sandbox.truth import COMPONENTS, Truth

_BUFFER = 1 << 20
_MAX_LINE = 4096  # a "line" longer than this is not an ID file


@dataclass(frozen=True, slots=True)
class StoredObject:
    """What GCS reports about a stored object."""

    size: int
    md5_hex: str
    md5_b64: str
    crc32c_b64: str


@dataclass(frozen=True, slots=True)
class IngestResult:
    stored: StoredObject
    ids: int  # non-empty lines
    rows: int  # affected IDs (result rows)
    error: str | None  # why the upload is not a valid ID file


def hashes(md5: hashlib._Hash, crc: google_crc32c.Checksum, size: int) -> StoredObject:
    return StoredObject(
        size=size,
        md5_hex=md5.hexdigest(),
        md5_b64=base64.b64encode(md5.digest()).decode(),
        crc32c_b64=base64.b64encode(crc.digest()).decode(),
    )


class Ingest:
    """Incremental validation + result generation for one upload (not thread-safe)."""

    def __init__(self, job_dir: Path, truth: Truth, *, shuffle: bool, name: str) -> None:
        job_dir.mkdir(parents=True, exist_ok=True)
        self._dir = job_dir
        self._name = name
        self._truth = truth
        self._shuffle = shuffle
        self._noun = "Tweet" if truth.job_type == "tweets" else "user"
        self.path = job_dir / f"{name}.submission"
        self._raw: BinaryIO = open(self.path, "wb", buffering=_BUFFER)  # noqa: SIM115
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._crc = google_crc32c.Checksum()
        self.size = 0
        self.ids = 0
        self.rows = 0
        self.error: str | None = None
        self._lines = 0
        self._carry = b""
        self._pending: list[list[bytes]] = [[] for _ in range(COMPONENTS)]
        self._pending_bytes = [0] * COMPONENTS
        self._files: dict[int, BinaryIO] = {}

    # -- feeding ----------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        if not data:
            return
        self._raw.write(data)
        self._md5.update(data)
        self._crc.update(data)
        self.size += len(data)
        if self.error is not None:
            return
        buf = self._carry + data if self._carry else data
        cut = buf.rfind(b"\n")
        if cut < 0:
            self._carry = buf
            if len(buf) > _MAX_LINE:
                self._fail(self._lines + 1)
            return
        self._carry = buf[cut + 1 :]
        if len(self._carry) > _MAX_LINE:
            self._fail(self._lines + buf.count(b"\n") + 1)
            return
        self._process(buf[:cut])

    def _process(self, block: bytes) -> None:
        if b"\r" in block:
            block = block.replace(b"\r\n", b"\n")
        lines = block.split(b"\n")
        if b" " in block or b"\t" in block or b"\r" in block:
            lines = [line.strip() for line in lines]  # rare: only for sloppy files
            block = b"\n".join(lines)
        digits = block.translate(None, b"\n")
        if (digits and not digits.isdigit()) or max(map(len, lines)) > 19:
            for number, line in enumerate(lines, start=self._lines + 1):
                if line and (len(line) > 19 or not line.isdigit()):
                    self._fail(number)
                    return
        self._lines += len(lines)
        # Empty lines are allowed and skipped; finding them costs a scan, so only if any.
        if b"\n\n" in block or block.startswith(b"\n") or block.endswith(b"\n") or not block:
            empty = lines.count(b"")
            if empty:
                lines = [line for line in lines if line]
        self.ids += len(lines)
        affected = self._truth.select(lines)
        if affected:
            self._add_rows(affected)

    def _add_rows(self, affected: list[bytes]) -> None:
        row_lines = self._truth.row_lines
        pending, sizes = self._pending, self._pending_bytes
        for ident in affected:
            for line, found in row_lines(ident):
                component = found if self._shuffle else 0
                pending[component].append(line)
                sizes[component] += len(line)
                self.rows += 1
                if sizes[component] >= _BUFFER:
                    self._flush(component)

    def _flush(self, component: int) -> None:
        if not self._pending[component]:
            return
        handle = self._files.get(component)
        if handle is None:
            handle = open(self.component_path(component), "wb", buffering=0)  # noqa: SIM115
            self._files[component] = handle
        handle.write(b"".join(self._pending[component]))
        self._pending[component] = []
        self._pending_bytes[component] = 0

    def _fail(self, line_number: int) -> None:
        self.error = (
            f"Invalid file: line {line_number} is not a {self._noun} ID "
            "(expected one numeric ID per line)"
        )

    def component_path(self, component: int) -> Path:
        return self._dir / f"{self._name}.part{component:02d}"

    # -- ending -----------------------------------------------------------------------
    def finish(self) -> IngestResult:
        """Process the last line (no newline needed), flush, close. Call once."""
        if self._carry and self.error is None:
            last = self._carry.strip()
            self._carry = b""
            self._process(last)
        for component in range(COMPONENTS):
            self._flush(component)
        self._close()
        return IngestResult(
            stored=hashes(self._md5, self._crc, self.size),
            ids=self.ids,
            rows=self.rows,
            error=self.error,
        )

    def abort(self) -> None:
        """Forget everything written so far (interrupted upload)."""
        self._close()
        self.path.unlink(missing_ok=True)
        for component in range(COMPONENTS):
            self.component_path(component).unlink(missing_ok=True)

    def _close(self) -> None:
        self._raw.close()
        for handle in self._files.values():
            handle.close()
        self._files.clear()
