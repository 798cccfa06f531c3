"""Atomic writes and temp cleanup after a crash."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator.files.atomic import (
    atomic_output,
    atomic_write_file,
    atomic_write_files,
    atomic_write_json,
    cleanup_temp_files,
    owner_tag,
    set_temp_owner,
    temp_path_for,
)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- atomic writes -------------------------------------------------------------------------


def test_atomic_write_data_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    dest = tmp_path / "a.jsonl"
    dest.write_bytes(b"old")
    atomic_write_file(dest, data=b"new\n")
    assert dest.read_bytes() == b"new\n"
    assert names(tmp_path) == ["a.jsonl"]


def test_atomic_write_copies_src_without_consuming_it(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    atomic_write_file(tmp_path / "dest.bin", src)
    assert (tmp_path / "dest.bin").read_bytes() == src.read_bytes()
    assert src.exists()


def test_atomic_write_may_link_on_the_same_filesystem(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"results\n")
    atomic_write_file(tmp_path / "dest", src, allow_link=True)
    assert (tmp_path / "dest").read_bytes() == b"results\n"
    assert src.exists()
    assert names(tmp_path) == ["dest", "src"]


def test_atomic_write_needs_exactly_one_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        atomic_write_file(tmp_path / "x")
    with pytest.raises(ValueError):
        atomic_write_file(tmp_path / "x", tmp_path / "y", data=b"")


def test_failure_mid_write_keeps_the_old_file(tmp_path: Path) -> None:
    dest = tmp_path / "m.json"
    dest.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(dest) as out:
        out.write(b"half")
        raise RuntimeError("disk on fire")
    assert dest.read_text() == "old"
    assert names(tmp_path) == ["m.json"]


def test_atomic_write_json_is_pretty_sorted_and_newline_terminated(tmp_path: Path) -> None:
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    atomic_write_json(tmp_path / "m.json", {"b": 1, "a": "é", "at": when, "p": Path("x")})
    text = (tmp_path / "m.json").read_text(encoding="utf-8")
    assert text == (
        '{\n  "a": "é",\n  "at": "2024-05-01T12:00:00.000Z",\n  "b": 1,\n  "p": "x"\n}\n'
    )


def test_new_files_honour_the_umask_not_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_file(tmp_path / "r", data=b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "r").stat().st_mode & 0o777 == 0o644


_KILLED_WRITER = """
import os, sys
from pathlib import Path
from orchestrator.files.atomic import atomic_output
with atomic_output(Path(sys.argv[1])) as out:
    out.write(b"partial " * 1000)
    out.flush()
    os.kill(os.getpid(), 9)
"""


def test_kill_9_mid_write_leaves_old_file_and_a_temp_that_cleanup_removes(tmp_path: Path) -> None:
    dest = tmp_path / "results.jsonl"
    dest.write_bytes(b"complete\n")
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(dest)], check=False)
    assert proc.returncode == -9
    assert dest.read_bytes() == b"complete\n"
    [temp] = [n for n in names(tmp_path) if n != "results.jsonl"]
    assert temp.startswith(".tmp-results.jsonl-")
    (tmp_path / "keep.txt").write_text("not ours")
    (tmp_path / ".tmp-dir").mkdir()
    assert cleanup_temp_files(tmp_path) == 1
    assert names(tmp_path) == [".tmp-dir", "keep.txt", "results.jsonl"]
    assert cleanup_temp_files(tmp_path / "missing") == 0


def test_on_a_shared_folder_a_host_removes_its_own_leftovers_never_anothers_write(
    tmp_path: Path,
) -> None:
    """Two hosts, one folder: node-b restarts (its old process died mid-write) while node-a
    writes. Only node-b's temp file goes at once; node-a's stays until it is an hour old."""
    try:
        set_temp_owner("node-a")
        writing = temp_path_for(tmp_path / "a.jsonl")
        set_temp_owner("node-b")
        leftover = temp_path_for(tmp_path / "b.jsonl")
    finally:
        set_temp_owner(None)
    for path in (writing, leftover):
        path.write_text("partial")
    assert cleanup_temp_files(tmp_path, min_age_s=3600, own_tag=owner_tag("node-b")) == 1
    assert writing.exists() and not leftover.exists()
    hour_ago = datetime.now(UTC).timestamp() - 3700
    os.utime(writing, (hour_ago, hour_ago))  # its writer died too, long ago
    assert cleanup_temp_files(tmp_path, min_age_s=3600, own_tag=owner_tag("node-b")) == 1
    assert not writing.exists()


def test_cleanup_can_spare_fresh_temp_files(tmp_path: Path) -> None:
    (tmp_path / ".tmp-x-1234").write_text("being written")
    assert cleanup_temp_files(tmp_path, min_age_s=3600) == 0
    assert cleanup_temp_files(tmp_path) == 1


def test_many_files_are_placed_whole_or_not_at_all(tmp_path: Path) -> None:
    (tmp_path / "b").write_bytes(b"old")
    atomic_write_files([(tmp_path / "a", b"1\n"), (tmp_path / "b", b"2\n")])
    assert (tmp_path / "a").read_bytes() == b"1\n" and (tmp_path / "b").read_bytes() == b"2\n"
    with pytest.raises(OSError):  # the second folder does not exist: nothing is replaced
        atomic_write_files([(tmp_path / "a", b"new"), (tmp_path / "missing" / "c", b"3")])
    assert (tmp_path / "a").read_bytes() == b"1\n"
    assert names(tmp_path) == ["a", "b"]  # no temp file left
