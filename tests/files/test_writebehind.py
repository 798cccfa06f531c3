"""Writing and hashing in a helper thread: order kept, errors handed back."""

from __future__ import annotations

import errno
import hashlib
import io
from pathlib import Path

import pytest

from orchestrator.files import writebehind
from orchestrator.files.writebehind import WriteBehind


def test_blocks_are_written_and_hashed_in_order(tmp_path: Path) -> None:
    blocks = [bytes([n % 251]) * (n * 37 % 5000 + 1) for n in range(500)]
    with open(tmp_path / "out", "wb") as out:
        writer = WriteBehind(out)
        for block in blocks:
            writer.put(memoryview(block) if len(block) % 2 else block)
        writer.close()
        writer.close()  # idempotent
    data = b"".join(blocks)
    assert (tmp_path / "out").read_bytes() == data
    assert writer.hash.hexdigest() == hashlib.sha256(data).hexdigest()


class _FullDisk(io.RawIOBase):
    """A file that takes `room` bytes and then fails like a full disk (a seam: a real
    ENOSPC needs a full filesystem)."""

    def __init__(self, room: int) -> None:
        self.room = room

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        size = len(memoryview(data))  # type: ignore[arg-type]
        if size > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= size
        return size


def test_an_error_of_the_helper_reaches_the_producer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(writebehind, "QUEUE_BLOCKS", 2)
    writer = WriteBehind(_FullDisk(10_000))  # type: ignore[arg-type]
    with pytest.raises(OSError) as caught:
        # Far more than the queue holds: put() must neither block on a dead helper nor
        # lose the error.
        for _ in range(1000):
            writer.put(b"x" * 1000)
        writer.close()
    assert caught.value.errno == errno.ENOSPC
    with pytest.raises(OSError):
        writer.close()
