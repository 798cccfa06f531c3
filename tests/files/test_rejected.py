"""Rejected inputs: unique names, moving the file untouched with its reason, across filesystems."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from orchestrator.files import rejected as rejected_module
from orchestrator.files.atomic import cleanup_temp_files
from orchestrator.files.rejected import SourceChanged, reject_file, unique_name


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- names ---------------------------------------------------------------------------------


def test_unique_name_counts_up_past_the_file_and_its_error_record(tmp_path: Path) -> None:
    assert unique_name(tmp_path, "a.txt") == "a.txt"
    (tmp_path / "a.txt").touch()
    assert unique_name(tmp_path, "a.txt") == "a (2).txt"
    (tmp_path / "a (2).txt.error.json").touch()
    assert unique_name(tmp_path, "a.txt") == "a (3).txt"
    assert unique_name(tmp_path, "noext", lambda n: n in {"noext", "noext (2)"}) == "noext (3)"


def test_unique_name_fits_name_max_with_the_reserved_suffix(tmp_path: Path) -> None:
    long = "é" * 200 + ".txt"  # 404 bytes
    name = unique_name(tmp_path, long, reserve_bytes=len(".error.json"))
    assert name.endswith(".txt")
    assert len(os.fsencode(name + ".error.json")) <= 255
    (tmp_path / (name + ".error.json")).write_text("{}")  # the OS accepts it


# --- rejected inputs -------------------------------------------------------------------------


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    spool = tmp_path / "spool"
    spool.mkdir()
    return spool, tmp_path / "outbox" / "rejected"


def record(rejected: Path, name: str) -> dict[str, object]:
    return json.loads((rejected / f"{name}.error.json").read_text(encoding="utf-8"))


def test_reject_moves_the_input_untouched_with_its_reason(dirs: tuple[Path, Path]) -> None:
    spool, rejected = dirs
    src = spool / "0af3.tweets"
    src.write_bytes(b"1\n-5\n")
    src.chmod(0o640)
    mtime = src.stat().st_mtime_ns
    error = {
        "reason": "invalid_lines",
        "message": f"0af3.tweets: 1 invalid line; see {src}",
        "detail": {"url": "https://storage.googleapis.com/b/o?X-Goog-Signature=abc"},
    }
    placed = reject_file(src, rejected, "my ids.txt", error)
    assert placed == rejected / "my ids.txt"
    assert not src.exists()
    assert placed.read_bytes() == b"1\n-5\n"
    assert placed.stat().st_mode & 0o777 == 0o640 and placed.stat().st_mtime_ns == mtime
    doc = record(rejected, "my ids.txt")
    assert doc["file"] == "my ids.txt" and doc["reason"] == "invalid_lines"
    assert datetime.fromisoformat(str(doc["rejected_at"]).replace("Z", "+00:00"))
    # No spool path or spool name, no signed-URL secret in the record.
    text = json.dumps(doc)
    assert str(spool) not in text and "0af3" not in text and "abc" not in text
    assert doc["message"] == "my ids.txt: 1 invalid line; see my ids.txt"


def test_reject_name_collision_gets_a_unique_name(dirs: tuple[Path, Path]) -> None:
    spool, rejected = dirs
    for content in (b"first", b"second"):
        src = spool / "x"
        src.write_bytes(content)
        reject_file(src, rejected, "-dash ünï.txt", {"reason": "r"})
    assert names(rejected) == [
        "-dash ünï (2).txt",
        "-dash ünï (2).txt.error.json",
        "-dash ünï.txt",
        "-dash ünï.txt.error.json",
    ]
    assert (rejected / "-dash ünï (2).txt").read_bytes() == b"second"
    assert record(rejected, "-dash ünï (2).txt")["original_name"] == "-dash ünï.txt"


def test_reject_never_produces_a_temp_looking_or_path_name(dirs: tuple[Path, Path]) -> None:
    spool, rejected = dirs
    (spool / "a").write_text("x")
    (spool / "b").write_text("y")
    assert reject_file(spool / "a", rejected, ".tmp-a", {}).name == "_.tmp-a"
    assert reject_file(spool / "b", rejected, "../../etc/passwd", {}).name == ".._.._etc_passwd"
    cleanup_temp_files(rejected)
    assert (rejected / "_.tmp-a").exists()


def test_retry_after_crash_before_the_move_reuses_the_record(
    dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    spool, rejected = dirs
    src = spool / "s"
    src.write_bytes(b"data")

    def crash(self: Path, target: Path) -> None:
        raise KeyboardInterrupt  # stands in for kill -9 right after the record was written

    with monkeypatch.context() as m:
        m.setattr(Path, "rename", crash)
        with pytest.raises(KeyboardInterrupt):
            reject_file(src, rejected, "a.txt", {"reason": "first try"})
    assert names(rejected) == ["a.txt.error.json"] and src.exists()
    placed = reject_file(src, rejected, "a.txt", {"reason": "second try"})
    assert placed == rejected / "a.txt"
    assert names(rejected) == ["a.txt", "a.txt.error.json"]
    assert record(rejected, "a.txt")["reason"] == "second try"


def test_retry_after_the_move_finished_returns_the_rejection(dirs: tuple[Path, Path]) -> None:
    spool, rejected = dirs
    src = spool / "s"
    src.write_bytes(b"data")
    first = reject_file(src, rejected, "a.txt", {})
    assert reject_file(src, rejected, "a.txt", {}) == first
    assert names(rejected) == ["a.txt", "a.txt.error.json"]


def test_reject_when_nothing_is_anywhere_says_so(dirs: tuple[Path, Path]) -> None:
    spool, rejected = dirs
    with pytest.raises(FileNotFoundError, match="gone"):
        reject_file(spool / "nope", rejected, "nope", {})


def test_user_file_named_like_a_record_is_not_overwritten(dirs: tuple[Path, Path]) -> None:
    spool, rejected = dirs
    (spool / "u").write_text("users' own data")
    reject_file(spool / "u", rejected, "a.txt.error.json", {})
    (spool / "a").write_text("1")
    placed = reject_file(spool / "a", rejected, "a.txt", {})
    assert placed.name == "a (2).txt"
    assert (rejected / "a.txt.error.json").read_text() == "users' own data"


def test_symlink_is_moved_as_a_link_not_followed(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    spool, rejected = dirs
    target = tmp_path / "secret"
    target.write_text("do not touch")
    (spool / "link").symlink_to(target)
    placed = reject_file(spool / "link", rejected, "link", {"reason": "symlink (not followed)"})
    assert placed.is_symlink() and placed.readlink() == target
    assert target.read_text() == "do not touch"
    assert record(rejected, "link")["entry_kind"] == "symlink"


def test_directory_and_fifo_are_moved_as_they_are(dirs: tuple[Path, Path]) -> None:
    spool, rejected = dirs
    (spool / "d").mkdir()
    (spool / "d" / "inner.txt").write_text("1\n")
    os.mkfifo(spool / "f")
    assert reject_file(spool / "d", rejected, "d", {}).joinpath("inner.txt").read_text() == "1\n"
    fifo = reject_file(spool / "f", rejected, "f", {})
    assert fifo.is_fifo()
    assert record(rejected, "d")["entry_kind"] == "directory"
    assert names(spool) == []


# --- across filesystems (inbox on one mount, outbox on another) -------------------------------


@pytest.fixture
def other_fs(tmp_path: Path) -> Iterator[Path]:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another filesystem")
    folder = shm / f"test-outbox-{uuid.uuid4().hex}"
    folder.mkdir()
    yield folder / "rejected"
    shutil.rmtree(folder)


def test_reject_across_filesystems_copies_then_removes(tmp_path: Path, other_fs: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_bytes(b"9\n" * 100_000)
    src.chmod(0o600)
    mtime = src.stat().st_mtime_ns
    placed = reject_file(src, other_fs, "in.txt", {"reason": "x"})
    assert placed.read_bytes() == b"9\n" * 100_000 and not src.exists()
    assert placed.stat().st_mode & 0o777 == 0o600 and placed.stat().st_mtime_ns == mtime
    link = tmp_path / "l"
    link.symlink_to("/nonexistent/target")
    assert reject_file(link, other_fs, "l", {}).readlink() == Path("/nonexistent/target")
    assert [n for n in names(other_fs) if n.startswith(".tmp-")] == []


def test_crash_after_cross_fs_copy_is_finished_without_a_duplicate(
    tmp_path: Path, other_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "in.txt"
    src.write_bytes(b"1\n")
    real_unlink = Path.unlink

    def crash(self: Path, missing_ok: bool = False) -> None:
        if self == src:
            raise KeyboardInterrupt  # kill -9 between the copy and removing the original
        real_unlink(self, missing_ok)

    with monkeypatch.context() as m:
        m.setattr(Path, "unlink", crash)
        with pytest.raises(KeyboardInterrupt):
            reject_file(src, other_fs, "in.txt", {})
    assert src.exists() and (other_fs / "in.txt").exists()
    assert reject_file(src, other_fs, "in.txt", {}) == other_fs / "in.txt"
    assert not src.exists()
    assert names(other_fs) == ["in.txt", "in.txt.error.json"]


def test_directory_cannot_cross_filesystems_and_stays(tmp_path: Path, other_fs: Path) -> None:
    (tmp_path / "d").mkdir()
    os.mkfifo(tmp_path / "f")
    for name in ("d", "f"):
        with pytest.raises(OSError, match="another filesystem") as info:
            reject_file(tmp_path / name, other_fs, name, {})
        assert info.value.errno == errno.EXDEV
        assert (tmp_path / name).exists()
    assert names(other_fs) == []


def test_a_file_renamed_over_the_name_during_the_cross_fs_copy_is_kept(
    tmp_path: Path, other_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The producer renames a corrected file over the name while the old one is copied
    (minutes for a large file). Before: src.unlink() deleted the new file, never copied.
    The seam: shutil.copyfileobj (the copy itself), with the producer's rename after it."""
    src = tmp_path / "in.txt"
    src.write_bytes(b"bad\n" * 1000)
    real = shutil.copyfileobj

    def producer_renames_meanwhile(*args: object, **kwargs: object) -> None:
        real(*args, **kwargs)  # type: ignore[arg-type]
        (tmp_path / "in.txt.part").write_bytes(b"1\n2\n")
        (tmp_path / "in.txt.part").rename(src)

    monkeypatch.setattr(shutil, "copyfileobj", producer_renames_meanwhile)
    with pytest.raises(SourceChanged):
        reject_file(src, other_fs, "in.txt", {"reason": "x"})
    assert src.read_bytes() == b"1\n2\n"  # the new file, for its own scan
    assert names(other_fs) == []  # neither the old copy nor a record without a file
    monkeypatch.undo()
    placed = reject_file(src, other_fs, "in.txt", {"reason": "x"})  # the next rescan's try
    assert placed.read_bytes() == b"1\n2\n" and not src.exists()


def test_a_fifo_swapped_in_after_the_lstat_is_never_opened_blocking(
    tmp_path: Path, other_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A FIFO put in place of the file between the lstat and the copy's open: a blocking
    open would hang the worker thread (holding the reject lock) until a writer appears.
    The seam: the error record's write, which comes between the two."""
    src = tmp_path / "in.txt"
    src.write_bytes(b"bad\n")
    real = rejected_module.atomic_write_json

    def swap_in_a_fifo(path: Path, data: object) -> None:
        real(path, data)
        src.unlink()
        os.mkfifo(src)

    monkeypatch.setattr(rejected_module, "atomic_write_json", swap_in_a_fifo)
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            reject_file(src, other_fs, "in.txt", {"reason": "x"})
            outcome.append(None)
        except BaseException as error:  # handed to the test thread
            outcome.append(error)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():  # the bug: release the hung open() by opening the writing end
        with open(src, "wb"):
            pass
        worker.join()
        pytest.fail("reject_file blocked on opening a FIFO")
    assert len(outcome) == 1 and isinstance(outcome[0], SourceChanged)
    assert src.is_fifo() and names(other_fs) == []


def test_error_record_times_are_all_rfc3339_utc_z(tmp_path: Path) -> None:
    """Whichever producer wrote them (ISO with +00:00 and microseconds, a datetime, a local
    offset), error.json's `*_at` fields read one way; other text is left alone."""
    spool, rejected = tmp_path / "spool", tmp_path / "rejected"
    spool.mkdir()
    rejected.mkdir()
    src = spool / "x.tweets"
    src.write_bytes(b"1\n")
    error = {"reason": "gave_up", "claimed_at": "2026-12-02T04:50:00.123456+00:00",
             "gave_up_at": "2026-12-02T06:50:00+02:00", "batch_created_at": "not a time",
             "message": "at 2026-12-02T04:50:00.123456+00:00"}
    reject_file(src, rejected, "x.txt", error)
    doc = record(rejected, "x.txt")
    assert doc["claimed_at"] == "2026-12-02T04:50:00Z"
    assert doc["gave_up_at"] == "2026-12-02T04:50:00Z"
    assert doc["batch_created_at"] == "not a time"
    assert doc["message"] == "at 2026-12-02T04:50:00.123456+00:00"  # prose is not rewritten
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["rejected_at"])
