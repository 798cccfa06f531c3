"""Assembles a job's result object from its components, with the quirks of real files.

Real result files are composed of 20 parts: rows come out unordered and a blank line shows
up (line 3 in both recorded files). We concatenate the components in a per-job order, put a
blank line after the second row and, in bigger files, at a few component boundaries;
streaming, hashing as we go.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import google_crc32c

from orchestrator.sandbox.ingest import StoredObject, hashes
from orchestrator.sandbox.truth import COMPONENTS

_CHUNK = 4 << 20
_BLANK_BEFORE_POSITIONS = frozenset({5, 10, 15})
_BIG = 64 << 10  # bigger files also get blank lines at a few component boundaries


def component_order(seed: int, job_id: str, shuffle: bool) -> list[int]:
    order = list(range(COMPONENTS))
    if shuffle:
        random.Random(f"{seed}:{job_id}").shuffle(order)
    return order


class _Writer:
    """Writes chunks, hashing them; inserts one blank line after the second row."""

    def __init__(self, path: Path, blank_after_second_row: bool) -> None:
        self._out = open(path, "wb", buffering=0)  # noqa: SIM115
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._crc = google_crc32c.Checksum()
        self._size = 0
        self._rows_seen = 0
        self._blank_pending = blank_after_second_row

    def write(self, data: bytes) -> None:
        if self._blank_pending:
            count = data.count(b"\n")
            if self._rows_seen + count >= 2:
                cut = -1
                for _ in range(2 - self._rows_seen):
                    cut = data.index(b"\n", cut + 1)
                self._blank_pending = False
                self._raw(data[: cut + 1])
                self._raw(b"\n")
                data = data[cut + 1 :]
            else:
                self._rows_seen += count
        self._raw(data)

    @property
    def size(self) -> int:
        return self._size

    def blank(self) -> None:
        self._raw(b"\n")

    def _raw(self, data: bytes) -> None:
        if data:
            self._out.write(data)
            self._md5.update(data)
            self._crc.update(data)
            self._size += len(data)

    def close(self) -> StoredObject:
        self._out.close()
        return hashes(self._md5, self._crc, self._size)


def assemble(parts: list[Path], order: list[int], target: Path, blank_lines: bool) -> StoredObject:
    """Concatenate `parts` (indexed by component) in `order` into `target`; remove the parts."""
    writer = _Writer(target, blank_after_second_row=blank_lines)
    for position, component in enumerate(order):
        part = parts[component]
        if not part.exists():
            continue
        if blank_lines and writer.size >= _BIG and position in _BLANK_BEFORE_POSITIONS:
            writer.blank()
        with open(part, "rb", buffering=0) as handle:
            while chunk := handle.read(_CHUNK):
                writer.write(chunk)
        part.unlink()
    return writer.close()
