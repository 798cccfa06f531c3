"""Hostile entries in outbox/rejected/: FIFOs, devices and symlinks named `*.error.json`, and
setuid/setgid bits on files the daemon (or root, in `requeue`/`cancel`) copies."""

from __future__ import annotations

import os
import shutil
import stat
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli.requeue import move_into
from orchestrator.files.atomic import copy_mode
from orchestrator.files.rejected import ERROR_SUFFIX, read_record, reject_file

# A blocked open() of a FIFO never returns: run the call in a thread and give up on it.
_DEADLINE_S = 5.0


def finishes(call: Callable[[], Any]) -> Any:
    """The result of `call`, or a test failure if it does not return within the deadline."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as error:  # re-raised below, in the test's thread
            box["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(_DEADLINE_S)
    if thread.is_alive():
        pytest.fail(f"still blocked after {_DEADLINE_S}s (a FIFO or /dev/zero was read)")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def unblock(fifo: Path) -> None:
    """Open the FIFO for writing without blocking, so a reader stuck on it (before the fix)
    gets EOF and its daemon thread ends."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    os.close(fd)


@pytest.fixture
def rejected(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "outbox" / "rejected"
    folder.mkdir(parents=True)
    yield folder
    for entry in folder.iterdir():
        if stat.S_ISFIFO(entry.lstat().st_mode):
            unblock(entry)


def _spooled(tmp_path: Path, content: bytes) -> Path:
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    src = spool / f"{uuid.uuid4().hex}.tweets"
    src.write_bytes(content)
    return src


@pytest.mark.parametrize("kind", ["fifo", "symlink-to-dev-zero", "symlink-to-fifo", "huge"])
def test_a_hostile_error_json_does_not_wedge_the_next_rejection_of_that_name(
    tmp_path: Path, rejected: Path, kind: str
) -> None:
    """A producer's `a.error.json` already sits in rejected/ (moved there as rejected input);
    the next rejection of a file named `a` must not read it, and must not take it for ours."""
    hostile = rejected / f"a{ERROR_SUFFIX}"
    if kind == "fifo":
        os.mkfifo(hostile)
    elif kind == "symlink-to-dev-zero":
        hostile.symlink_to("/dev/zero")
    elif kind == "symlink-to-fifo":
        fifo = tmp_path / "elsewhere.fifo"
        os.mkfifo(fifo)
        hostile.symlink_to(fifo)
    else:
        with open(hostile, "wb") as f:
            f.truncate(64 << 20)  # sparse, 64 MiB of zeros: over the bound for a record

    placed = finishes(lambda: reject_file(_spooled(tmp_path, b"1\n"), rejected, "a",
                                          {"reason": "empty"}))
    # `a` is free, but `a.error.json` is not a record of ours: the next name is taken.
    assert placed.name == "a (2)" and placed.read_bytes() == b"1\n"
    assert (read_record(rejected / f"a (2){ERROR_SUFFIX}") or {})["reason"] == "empty"
    # The hostile entry is left exactly as it was.
    assert hostile.is_symlink() == kind.startswith("symlink")
    if kind == "fifo":
        assert stat.S_ISFIFO(hostile.lstat().st_mode)
    if kind == "fifo":
        unblock(hostile)
    elif kind == "symlink-to-fifo":
        unblock(tmp_path / "elsewhere.fifo")


def test_a_retry_after_the_move_is_not_confused_by_a_fifo_record(
    tmp_path: Path, rejected: Path
) -> None:
    """The spooled file is gone (moved before a crash): finding the finished rejection looks
    at every `a*.error.json`, and a FIFO among them must not block that search."""
    os.mkfifo(rejected / f"a{ERROR_SUFFIX}")
    (rejected / "a").write_bytes(b"x\n")
    gone = tmp_path / "spool" / "gone.tweets"
    with pytest.raises(FileNotFoundError):
        finishes(lambda: reject_file(gone, rejected, "a", {}))


@pytest.mark.parametrize("kind", ["fifo", "symlink", "dev-zero"])
def test_requeue_reads_no_hostile_record(tmp_path: Path, kind: str) -> None:
    record = tmp_path / f"ids.txt{ERROR_SUFFIX}"
    target = tmp_path / "real.json"
    target.write_text('{"job_type": "tweets", "file": "ids.txt"}')
    if kind == "fifo":
        os.mkfifo(record)
    elif kind == "symlink":
        record.symlink_to(target)  # even a valid record behind a link is not read
    else:
        record.symlink_to("/dev/zero")
    assert finishes(lambda: read_record(record)) is None
    if kind == "fifo":
        unblock(record)


def test_copies_get_0600_or_0640_whatever_the_original_mode() -> None:
    assert copy_mode(0o4755) == 0o640 and copy_mode(0o6600) == 0o600
    assert copy_mode(0o1777) == 0o640 and copy_mode(0o000) == 0o600


# --- setuid / setgid / sticky on copies ------------------------------------------------------


@pytest.fixture
def other_fs(tmp_path: Path) -> Iterator[Path]:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another filesystem (a copy, not a rename)")
    folder = shm / f"test-hostile-{uuid.uuid4().hex}"
    folder.mkdir()
    yield folder
    shutil.rmtree(folder)


def _special_bits(path: Path) -> int:
    return path.stat().st_mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX)


def test_a_rejected_copy_never_carries_setuid_setgid_or_sticky(
    tmp_path: Path, other_fs: Path
) -> None:
    src = _spooled(tmp_path, b"1\n")
    src.chmod(0o7777)
    placed = reject_file(src, other_fs / "rejected", "suid.txt", {"reason": "x"})
    assert placed.read_bytes() == b"1\n"
    assert _special_bits(placed) == 0
    assert stat.S_IMODE(placed.stat().st_mode) == 0o640  # nothing for others, no exec


def test_requeue_copy_never_carries_setuid_setgid_or_sticky(
    tmp_path: Path, other_fs: Path
) -> None:
    src = other_fs / "suid.txt"
    src.write_bytes(b"1\n")
    src.chmod(0o6755)
    inbox = tmp_path / "inbox" / "tweets"
    dest = move_into(src, os.lstat(src), inbox, "suid.txt")
    assert dest.read_bytes() == b"1\n" and not src.exists()
    assert _special_bits(dest) == 0
    assert stat.S_IMODE(dest.stat().st_mode) == 0o640
