"""Claiming across filesystems (files/claim.py copy_into_spool): the original leaves the
inbox only if the copy holds every byte of it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from orchestrator.files import claim as claim_module
from orchestrator.files.claim import Replaced, copy_into_spool


def test_bytes_appended_while_the_copy_is_committed_keep_the_file_in_the_inbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A producer without `.part` appends while the copy is fsynced and renamed (seconds for
    gigabytes). Before: only the inode was compared before the unlink, so the appended bytes
    went with the original and the shorter copy was delivered. The seam: the real
    atomic_output, with the producer's write after it committed."""
    source = tmp_path / "inbox" / "big.txt"
    source.parent.mkdir()
    source.write_bytes(b"111\n" * 1000)
    spool = tmp_path / "spool"
    spool.mkdir()
    target = spool / "big.tweets"
    real = claim_module.atomic_output

    @contextlib.contextmanager
    def producer_appends_after_the_commit(path: Path) -> Iterator[BinaryIO]:
        with real(path) as out:
            yield out
        assert path.exists()  # committed: only the source is still to go
        with open(source, "ab") as writer:
            writer.write(b"222\n")

    monkeypatch.setattr(claim_module, "atomic_output", producer_appends_after_the_commit)
    with pytest.raises(Replaced):
        copy_into_spool(source, target, source.stat().st_ino)
    assert source.read_bytes() == b"111\n" * 1000 + b"222\n"  # stays, to be claimed again
    assert list(spool.iterdir()) == []  # no shorter copy left to deliver


def test_an_unchanged_file_is_copied_and_removed(tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_bytes(b"333\n" * 10)
    mtime = source.stat().st_mtime_ns
    target = tmp_path / "spooled"
    copy_into_spool(source, target, source.stat().st_ino)
    assert not source.exists() and target.read_bytes() == b"333\n" * 10
    assert target.stat().st_mtime_ns == mtime
