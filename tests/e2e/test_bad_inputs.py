"""The bad input catalogue (issue 4 part 6), each case end to end against the real daemon.

Every test asserts what a user sees (a result in outbox/<type>/, or the file untouched in
outbox/rejected/ beside `<file>.error.json` naming the file and line), that nothing is lost,
and that the daemon is still working afterwards: a good file dropped later is delivered.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
from daemon_helpers import (
    db_rows,
    drained,
    drop,
    load,
    make_ids,
    outcome,
    read_results,
    running_service,
    wait_for,
    write_config,
)
from inbox_helpers import read_permission_as_unprivileged

from orchestrator.clock import SystemClock, from_iso
from orchestrator.config import Config
from orchestrator.core.model import InputState, JobType
from orchestrator.daemon import intake as intake_module
from orchestrator.daemon.intake import Intake
from orchestrator.files.inbox import Candidate
from orchestrator.layout import Layout
from orchestrator.sandbox import Sandbox
from orchestrator.store.sqlite import Store

# ---- helpers ------------------------------------------------------------------------------


def put(folder: Path, name: str, data: bytes) -> Path:
    """A well-behaved producer that does NOT create the folder (drop() would mask that)."""
    part = folder / f".incoming-{os.getpid()}"  # short: `name` may already be 255 bytes
    part.write_bytes(data)
    final = folder / name
    part.rename(final)
    return final


def lines(ids: list[str], end: str = "\n") -> bytes:
    return "".join(f"{i}{end}" for i in ids).encode()


def rejected(workdir: Path, name: str) -> tuple[Path, dict[str, Any]]:
    folder = workdir / "outbox" / "rejected"
    return folder / name, json.loads((folder / f"{name}.error.json").read_text())


def manifest(workdir: Path, job_type: str, stem: str) -> dict[str, Any]:
    return json.loads((workdir / "outbox" / job_type / f"{stem}.manifest.json").read_text())


def spool(workdir: Path) -> list[str]:
    return sorted(p.name for p in (workdir / "state" / "spool").iterdir())


_after_seed = iter(range(1000, 2000))


async def still_works(workdir: Path, sandbox: Sandbox, job_type: str = "tweets") -> None:
    """The daemon keeps going: a good file dropped now comes back with the right results."""
    seed = next(_after_seed)
    name = f"good-after-{seed}.txt"
    ids = make_ids(seed, 25)
    drop(workdir, job_type, name, ids)
    await wait_for(lambda: outcome(workdir, job_type, name) == "delivered",
                   what=f"{name} delivered after the bad input")
    assert read_results(workdir, job_type, Path(name).stem) == sandbox.expected_results(
        job_type, ids)


def events(logs: list[dict[str, Any]], name: str, level: str | None = None) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name and (level is None or e["log_level"] == level)]


@pytest.fixture
def config(tmp_path: Path, sandbox: Sandbox) -> Config:
    return load(write_config(tmp_path, sandbox.base_url))


# ---- content that is rejected whole -------------------------------------------------------

TEN_MB_LINE = b"1234567890123456789," * (10 * 1024 * 1024 // 20)  # IDs comma-separated

# id -> (file content, reason, line, words the message must contain)
REJECTED_CONTENT: dict[str, tuple[bytes, str, int | None, str]] = {
    "empty": (b"", "empty", None, "no IDs: the file is empty"),
    "only-blank-lines": (b"\n   \n\t\r\n\n", "empty", None, "only blank lines"),
    "twenty-digits": (b"123\n12345678901234567890\n", "invalid_lines", 2,
                      "20 digits, more than the 19"),
    "negative": (b"123\n456\n-789\n", "invalid_lines", 3, "negative number"),
    "float": (b"1.5\n", "invalid_lines", 1, "decimal number"),
    "spreadsheet-exponent": (b"123\n1.23457E+18\r\n", "invalid_lines", 2, "exponent notation"),
    "hex": (b"123\n0x1b4e2f\n", "invalid_lines", 2, "hexadecimal"),
    "json": (b'[\n  "1234567890",\n  "2345678901"\n]\n', "invalid_lines", 1, "JSON"),
    "json-object": (b'{"ids": [1234567890, 2345678901]}', "invalid_lines", 1, "JSON"),
    "binary": (gzip.compress(b"123\n456\n"), "binary", 1, "binary content (NUL bytes)"),
    "utf16": ("123\n456\n".encode("utf-16"), "binary", 1, "UTF-16"),
    "invalid-utf8": (b"123\n45\xff6\n789\n", "not_utf8", 2, "not UTF-8 text at line 2"),
    "ten-mb-single-line": (TEN_MB_LINE, "line_too_long", 1, "line 1 is longer than 4096"),
}


@pytest.mark.parametrize("case", list(REJECTED_CONTENT))
async def test_bad_content_is_rejected_whole_with_file_and_line(
    tmp_path: Path, sandbox: Sandbox, config: Config, case: str
) -> None:
    content, reason, line, words = REJECTED_CONTENT[case]
    name = f"{case}.txt"
    async with running_service(config) as service:
        drop(tmp_path, "tweets", name, content)
        await drained(service)
        assert outcome(tmp_path, "tweets", name) == "rejected", f"{name} rejected"
        await still_works(tmp_path, sandbox)

    moved, error = rejected(tmp_path, name)
    # Untouched, so the producer can fix it (10 MB compared by hash, not held twice).
    assert hashlib.sha256(moved.read_bytes()).digest() == hashlib.sha256(content).digest()
    assert error["file"] == name and error["job_type"] == "tweets"
    assert error["reason"] == reason and error["stage"] == "validation"
    assert error["message"].startswith(f"{name}: ") and words in error["message"]
    if line is not None:
        reported = error["bad_lines"][0]["line"] if "bad_lines" in error else error["line"]
        assert reported == line
        assert f"line {line}" in error["message"]
    assert not (tmp_path / "inbox" / "tweets" / name).exists()
    assert spool(tmp_path) == []
    assert len(sandbox.jobs()) == 1, "only the good file became a remote job"


async def test_a_ten_mb_line_under_the_drop_policy_is_dropped_and_the_rest_submitted(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config = load(write_config(tmp_path, sandbox.base_url, invalid_lines="drop"))
    ids = make_ids(61, 20)
    async with running_service(config) as service:
        drop(tmp_path, "users", "pasted.txt", lines(ids[:10]) + TEN_MB_LINE + b"\n"
             + lines(ids[10:]))
        await drained(service)
        assert outcome(tmp_path, "users", "pasted.txt") == "delivered"
    found = manifest(tmp_path, "users", "pasted")
    assert found["counts"]["submitted"] == 20
    assert found["input"]["dropped_lines"] == 1
    assert found["input"]["bad_lines"][0]["line"] == 11
    assert read_results(tmp_path, "users", "pasted") == sandbox.expected_results("users", ids)


# ---- content that is accepted -------------------------------------------------------------

ACCEPTED_CONTENT = {
    "crlf": lambda ids: lines(ids, "\r\n"),
    "bom": lambda ids: b"\xef\xbb\xbf" + lines(ids),
    "bom-crlf-no-final-newline": lambda ids: b"\xef\xbb\xbf" + lines(ids, "\r\n")[:-2],
    "spaces-and-tabs": lambda ids: b"".join(
        f"{' ' * (n % 3)}\t{i} \t{' ' * (n % 2)}\n".encode() for n, i in enumerate(ids)),
    "blank-lines-between": lambda ids: b"\n\n" + lines(ids, "\n \n"),
}


@pytest.mark.parametrize("case", list(ACCEPTED_CONTENT))
async def test_harmless_variations_are_accepted_and_results_are_exact(
    tmp_path: Path, sandbox: Sandbox, config: Config, case: str
) -> None:
    ids = make_ids(len(case), 60)
    async with running_service(config) as service:
        drop(tmp_path, "users", f"{case}.txt", ACCEPTED_CONTENT[case](ids))
        await drained(service)
        assert outcome(tmp_path, "users", f"{case}.txt") == "delivered"
    assert read_results(tmp_path, "users", case) == sandbox.expected_results("users", ids)
    found = manifest(tmp_path, "users", case)
    assert found["counts"]["submitted"] == len(ids)
    assert found["input"]["dropped_lines"] == 0
    assert spool(tmp_path) == []


# ---- names ------------------------------------------------------------------------------


async def test_names_with_spaces_unicode_a_leading_dash_or_255_bytes_work(
    tmp_path: Path, sandbox: Sandbox, config: Config
) -> None:
    long_name = "é" * 120 + "-" * 11 + ".txt"  # 255 bytes: <stem>.manifest.json would not fit
    assert len(long_name.encode()) == 255
    good = {"my daily file.txt": "my daily file", "ünïcødé 東京 ids.txt": "ünïcødé 東京 ids",
            "-rf --all.txt": "-rf --all"}
    ids = {name: make_ids(n, 15) for n, name in enumerate([*good, long_name])}
    async with running_service(config):
        for name, some in ids.items():
            put(tmp_path / "inbox" / "tweets", name, lines(some))
        drop(tmp_path, "tweets", "-bad ünï.txt", b"12x\n")
        await wait_for(lambda: len(db_rows(tmp_path, "SELECT 1 FROM inputs WHERE state IN"
                                           " ('delivered', 'rejected')")) == 5,
                       what="five outcomes")
    for name, stem in good.items():
        assert read_results(tmp_path, "tweets", stem) == sandbox.expected_results(
            "tweets", ids[name])
        assert manifest(tmp_path, "tweets", stem)["input"]["file"] == name
    # The 255-byte name gets a shortened stem, so both outbox names fit in NAME_MAX.
    out = [p.name for p in (tmp_path / "outbox" / "tweets").iterdir()
           if p.name.startswith("éé")]
    assert len(out) == 2 and all(len(n.encode()) <= 255 for n in out)
    stem = out[0].removesuffix(".jsonl").removesuffix(".manifest.json")
    assert read_results(tmp_path, "tweets", stem) == sandbox.expected_results(
        "tweets", ids[long_name])
    assert manifest(tmp_path, "tweets", stem)["input"]["file"] == long_name
    moved, error = rejected(tmp_path, "-bad ünï.txt")
    assert moved.read_bytes() == b"12x\n" and error["bad_lines"][0]["line"] == 1


async def test_a_name_that_is_not_utf8_is_claimed_under_a_readable_name(
    tmp_path: Path, sandbox: Sandbox, config: Config
) -> None:
    ids = make_ids(62, 10)
    raw = os.fsdecode(b"latin1-caf\xe9.txt")  # how a Latin-1 producer names "café"
    async with running_service(config) as service:
        (tmp_path / "inbox" / "tweets" / raw).write_bytes(lines(ids))
        (tmp_path / "inbox" / "users" / os.fsdecode(b"bad-\xff.txt")).write_bytes(b"x\n")
        await drained(service)
        assert (
            outcome(tmp_path, "tweets", "latin1-caf\\xe9.txt") is not None
            and outcome(tmp_path, "users", "bad-\\xff.txt") is not None
        )
        await still_works(tmp_path, sandbox)
    assert read_results(tmp_path, "tweets", "latin1-caf\\xe9") == sandbox.expected_results(
        "tweets", ids)
    assert manifest(tmp_path, "tweets", "latin1-caf\\xe9")["input"]["file"] == "latin1-caf\\xe9.txt"
    moved, error = rejected(tmp_path, "bad-\\xff.txt")
    assert moved.read_bytes() == b"x\n" and error["file"] == "bad-\\xff.txt"


# ---- files that change or are replaced ----------------------------------------------------


async def test_a_file_still_being_written_is_claimed_only_once_stable(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    min_age = 1.0
    config = load(write_config(tmp_path, sandbox.base_url, min_age_s=min_age))
    ids = make_ids(63, 70)
    path = tmp_path / "inbox" / "tweets" / "growing.txt"
    async with running_service(config) as service:
        # A careless producer writing straight into the inbox, in steps quicker than min_age.
        with open(path, "wb") as out:
            for step in range(7):
                out.write(lines(ids[step * 10:(step + 1) * 10]))
                out.flush()
                await anyio.sleep(0.2)
                assert path.exists(), f"claimed while still growing (after step {step})"
                assert db_rows(tmp_path, "SELECT 1 FROM inputs") == []
        last_change = path.stat().st_mtime_ns / 1e9
        await drained(service)
        assert outcome(tmp_path, "tweets", "growing.txt") == "delivered"
    assert read_results(tmp_path, "tweets", "growing") == sandbox.expected_results("tweets", ids)
    assert manifest(tmp_path, "tweets", "growing")["counts"]["submitted"] == 70
    claimed_at = from_iso(db_rows(tmp_path, "SELECT claimed_at FROM inputs")[0]["claimed_at"])
    assert claimed_at is not None
    assert claimed_at.timestamp() >= last_change + min_age - 0.001, "claimed before stable"
    assert len(sandbox.jobs()) == 1


async def test_a_file_replaced_before_it_was_claimed_is_processed_once_as_the_new_file(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config = load(write_config(tmp_path, sandbox.base_url, min_age_s=0.6))
    first, second = make_ids(64, 30), make_ids(65, 40)
    async with running_service(config) as service:
        drop(tmp_path, "tweets", "daily.txt", first)
        drop(tmp_path, "tweets", "daily.txt", second)  # renamed over the first
        assert db_rows(tmp_path, "SELECT 1 FROM inputs") == [], "test precondition"
        await drained(service)
        assert outcome(tmp_path, "tweets", "daily.txt") == "delivered"
        await still_works(tmp_path, sandbox)
    assert read_results(tmp_path, "tweets", "daily") == sandbox.expected_results("tweets", second)
    assert manifest(tmp_path, "tweets", "daily")["counts"]["submitted"] == 40
    assert not (tmp_path / "outbox" / "tweets" / "daily-2.jsonl").exists()
    assert len(sandbox.jobs()) == 2  # daily.txt once, plus the good file


async def test_a_file_replaced_after_the_first_was_claimed_gets_its_own_result(
    tmp_path: Path, sandbox: Sandbox, config: Config
) -> None:
    first, second = make_ids(66, 30), make_ids(67, 40)
    path = tmp_path / "inbox" / "users" / "daily.txt"
    async with running_service(config) as service:
        drop(tmp_path, "users", "daily.txt", first)
        await wait_for(lambda: not path.exists(), what="the first daily.txt claimed")
        drop(tmp_path, "users", "daily.txt", second)
        await drained(service)
        assert (
            (tmp_path / "outbox/users/daily-2.manifest.json").exists()
            and outcome(tmp_path, "users", "daily.txt") == "delivered"
        )
    assert read_results(tmp_path, "users", "daily") == sandbox.expected_results("users", first)
    assert read_results(tmp_path, "users", "daily-2") == sandbox.expected_results("users", second)
    assert manifest(tmp_path, "users", "daily-2")["input"]["file"] == "daily.txt"


# The instant of the claim itself (in-process: the race is microseconds wide end to end).


async def _intake(tmp_path: Path) -> tuple[Intake, Store]:
    layout = Layout(tmp_path / "inbox", tmp_path / "outbox", tmp_path / "state")
    layout.ensure()
    (tmp_path / "inbox" / "tweets").mkdir(parents=True)
    store = await Store.open(layout.db_path, SystemClock())
    return Intake(store, layout), store


def _candidate(path: Path) -> Candidate:
    st = path.stat()
    return Candidate(path, JobType.TWEETS, st.st_size, st.st_mtime_ns, st.st_ino)


async def test_a_file_renamed_over_the_name_between_scan_and_claim_is_not_claimed_for_it(
    tmp_path: Path,
) -> None:
    intake, store = await _intake(tmp_path)
    try:
        seen = put(tmp_path / "inbox" / "tweets", "a.txt", b"123\n")
        candidate = _candidate(seen)
        put(tmp_path / "inbox" / "tweets", "a.txt", b"456\n789\n")  # after the scan
        assert await intake.claim(candidate) is None
        assert seen.read_bytes() == b"456\n789\n"  # left for its own quiet period
        assert await store.inputs_in(list(InputState)) == []
        claimed = await intake.claim(_candidate(seen))
        assert claimed is not None and not seen.exists()
    finally:
        await store.close()


async def test_a_claim_across_filesystems_copies_and_removes_only_the_copied_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    intake, store = await _intake(tmp_path)
    real_rename = Path.rename

    def cross_device(self: Path, target: Any) -> Any:
        if self.parent.name == "tweets":
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_rename(self, target)

    path = put(tmp_path / "inbox" / "tweets", "far.txt", b"123\n456\n")
    monkeypatch.setattr(Path, "rename", cross_device)
    try:
        claimed = await intake.claim(_candidate(path))
        assert claimed is not None and not path.exists()
        item = await store.get_input(claimed.id)
        assert item is not None and item.state is InputState.QUEUED and item.id_count == 2
    finally:
        await store.close()


async def test_a_cross_filesystem_file_the_daemon_cannot_delete_is_reported_once_not_copied_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inbox on another filesystem, in a folder the daemon may read but not write."""
    intake, store = await _intake(tmp_path)
    real_rename, real_unlink = Path.rename, Path.unlink

    def cross_device(self: Path, target: Any) -> Any:
        if self.parent.name == "tweets":
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_rename(self, target)

    def read_only_inbox(self: Path, missing_ok: bool = False) -> None:
        if self.parent.name == "tweets":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        real_unlink(self, missing_ok=missing_ok)

    path = put(tmp_path / "inbox" / "tweets", "stuck.txt", b"123\n456\n")
    monkeypatch.setattr(Path, "rename", cross_device)
    monkeypatch.setattr(Path, "unlink", read_only_inbox)
    try:
        for _ in range(3):  # three rescans
            assert await intake.claim(_candidate(path)) is None
        assert path.exists()  # nothing lost
        assert [p.name for p in (tmp_path / "state" / "spool").iterdir()] == []  # no copies
        assert await store.inputs_in(list(InputState)) == []  # no stray claiming rows
    finally:
        await store.close()


async def test_recovery_keeps_a_whole_spooled_file_even_if_it_is_not_the_one_recorded(
    tmp_path: Path,
) -> None:
    """kill -9 between the rename and `claimed`, where the rename took a replacement file:
    the spooled file is complete (rename and copy are atomic) and must never be deleted."""
    intake, store = await _intake(tmp_path)
    try:
        row = await store.insert_claiming(job_type=JobType.TWEETS, name="a.txt", out_stem="a",
                                          spool_name="x.tweets", inode=1, size_bytes=4)
        (intake.layout.spool / "x.tweets").write_bytes(b"456\n789\n")
        await intake.recover()
        item = await store.get_input(row.id)
        assert item is not None and item.state is InputState.QUEUED and item.id_count == 2
    finally:
        await store.close()


# ---- entries that are not regular files in a type folder ----------------------------------


async def test_a_symlink_is_not_followed_and_moved_to_rejected_as_a_link(
    tmp_path: Path, sandbox: Sandbox, config: Config
) -> None:
    target = tmp_path / "elsewhere.txt"
    target.write_bytes(lines(make_ids(68, 5)))
    before = target.read_bytes(), target.stat().st_mtime_ns
    async with running_service(config) as service:
        (tmp_path / "inbox" / "tweets" / "link.txt").symlink_to(target)
        await drained(service)
        assert outcome(tmp_path, "tweets", "link.txt") == "rejected"
        await still_works(tmp_path, sandbox)
    moved, error = rejected(tmp_path, "link.txt")
    assert moved.is_symlink() and moved.readlink() == target
    assert (target.read_bytes(), target.stat().st_mtime_ns) == before  # target untouched
    assert error["reason"] == "not_a_regular_file" and error["entry_kind"] == "symlink"
    assert error["message"] == "link.txt: symlink (not followed)"
    assert len(sandbox.jobs()) == 1


async def test_a_directory_in_a_type_folder_is_moved_to_rejected_whole(
    tmp_path: Path, sandbox: Sandbox, config: Config
) -> None:
    async with running_service(config) as service:
        folder = tmp_path / "inbox" / "users" / "batch-folder"
        folder.mkdir()
        (folder / "ids.txt").write_bytes(b"123\n")
        await drained(service)
        assert outcome(tmp_path, "users", "batch-folder") == "rejected"
        await still_works(tmp_path, sandbox, "users")
    moved, error = rejected(tmp_path, "batch-folder")
    assert (moved / "ids.txt").read_bytes() == b"123\n"  # nothing inside lost
    assert error["entry_kind"] == "directory" and error["message"] == "batch-folder: directory"


async def test_a_fifo_is_never_opened_and_is_moved_to_rejected(
    tmp_path: Path, sandbox: Sandbox, config: Config
) -> None:
    async with running_service(config) as service:
        os.mkfifo(tmp_path / "inbox" / "tweets" / "pipe")
        await drained(service)
        assert outcome(tmp_path, "tweets", "pipe") == "rejected"
        await still_works(tmp_path, sandbox)  # a blocking open() would have hung the daemon
    moved, error = rejected(tmp_path, "pipe")
    assert stat.S_ISFIFO(moved.lstat().st_mode)
    assert error["entry_kind"] == "fifo" and error["message"] == "pipe: fifo"


async def test_a_file_without_read_permission_is_rejected_with_that_reason(
    tmp_path: Path, sandbox: Sandbox, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The tests may run as root, which reads anything: chmod 000 alone proves nothing there.
    read_permission_as_unprivileged(monkeypatch)
    async with running_service(config) as service:
        path = drop(tmp_path, "tweets", "locked.txt", make_ids(69, 5))
        path.chmod(0)
        await drained(service)
        assert outcome(tmp_path, "tweets", "locked.txt") == "rejected"
        await still_works(tmp_path, sandbox)
    moved, error = rejected(tmp_path, "locked.txt")
    assert stat.S_IMODE(moved.stat().st_mode) == 0  # moved as it was
    assert error["reason"] == "unreadable"
    assert error["message"] == "locked.txt: no read permission"


async def test_a_full_spool_disk_defers_validation_instead_of_rejecting(
    tmp_path: Path, sandbox: Sandbox, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writing the upload body can fail for our reasons (ENOSPC): never the input's fault."""
    real = intake_module.validate_id_file
    failures = iter([True, True])

    def full_disk(*args: Any, **kwargs: Any) -> Any:
        if next(failures, False):
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(intake_module, "validate_id_file", full_disk)
    ids = make_ids(70, 20)
    with structlog.testing.capture_logs() as logs:
        async with running_service(config) as service:
            drop(tmp_path, "tweets", "patient.txt", ids)
            await drained(service)
            assert outcome(tmp_path, "tweets", "patient.txt") == "delivered"
    assert read_results(tmp_path, "tweets", "patient") == sandbox.expected_results("tweets", ids)
    assert len(events(logs, "input.validation_deferred", "warning")) == 1  # said once
    assert not (tmp_path / "outbox" / "rejected" / "patient.txt").exists()


# ---- folders ------------------------------------------------------------------------------


async def test_a_file_in_the_inbox_root_is_rejected_with_where_to_put_it(
    tmp_path: Path, sandbox: Sandbox, config: Config
) -> None:
    async with running_service(config):
        put(tmp_path / "inbox", "stray.txt", lines(make_ids(71, 5)))
        await wait_for(lambda: (tmp_path / "outbox/rejected/stray.txt.error.json").exists())
        await still_works(tmp_path, sandbox)
    moved, error = rejected(tmp_path, "stray.txt")
    assert moved.read_bytes() == lines(make_ids(71, 5))
    assert error["reason"] == "not_in_type_folder" and error["job_type"] is None
    assert "stray.txt" in error["message"] and "tweets/ or users/" in error["message"]


async def test_type_folders_missing_at_start_or_deleted_while_running_are_recreated(
    tmp_path: Path, sandbox: Sandbox, config: Config
) -> None:
    inbox = tmp_path / "inbox"
    assert not inbox.exists()
    ids = make_ids(72, 10)
    with structlog.testing.capture_logs() as logs:
        async with running_service(config) as service:
            assert (inbox / "tweets").is_dir() and (inbox / "users").is_dir()
            put(inbox / "users", "one.txt", lines(ids))
            await drained(service)
            assert outcome(tmp_path, "users", "one.txt") == "delivered"

            shutil.rmtree(inbox / "users")
            await wait_for(lambda: (inbox / "users").is_dir(), what="users/ recreated")
            put(inbox / "users", "two.txt", lines(ids))
            await drained(service)
            assert outcome(tmp_path, "users", "two.txt") == "delivered"

            shutil.rmtree(inbox)  # the whole inbox, and its inotify watch with it
            await wait_for(lambda: (inbox / "tweets").is_dir(), what="inbox recreated")
            put(inbox / "tweets", "three.txt", lines(ids))
            await drained(service)
            assert outcome(tmp_path, "tweets", "three.txt") == "delivered"
    created = {(Path(e["folder"]).name, e["at_start"])
               for e in events(logs, "inbox.folder_created")}
    assert {("inbox", True), ("tweets", True), ("users", True), ("users", False),
            ("inbox", False)} <= created
    assert read_results(tmp_path, "users", "two") == sandbox.expected_results("users", ids)


# ---- an outbox that cannot be written -------------------------------------------------------


@contextlib.contextmanager
def immutable(folder: Path) -> Iterator[None]:
    """chattr +i: not even root may create files in `folder` (skipped where unsupported)."""
    try:
        subprocess.run(["chattr", "+i", str(folder)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"chattr +i is not available here: {exc}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True, capture_output=True)


def blocked_by_a_file(folder: Path) -> None:
    """Root ignores modes, so 'not writable' is made honest: a regular file where the folder
    should be (every write below it fails with ENOTDIR/EEXIST, for any user)."""
    shutil.rmtree(folder)
    folder.write_text("not a folder\n")


def unblock(folder: Path) -> None:
    folder.unlink()
    folder.mkdir()


async def test_rejected_folder_not_writable_then_fixed_nothing_lost(
    tmp_path: Path, sandbox: Sandbox, config: Config
) -> None:
    rejected_dir = tmp_path / "outbox" / "rejected"
    with structlog.testing.capture_logs() as logs:
        async with running_service(config) as service:
            blocked_by_a_file(rejected_dir)
            drop(tmp_path, "tweets", "bad.txt", b"123\nabc\n")
            (tmp_path / "target.txt").write_bytes(b"1\n")
            (tmp_path / "inbox" / "tweets" / "link.txt").symlink_to(tmp_path / "target.txt")
            # Several retries pass, each failing; the operator is told once per file.
            await wait_for(lambda: len(events(logs, "outbox.reject_deferred", "debug")) >= 2
                           and len(events(logs, "inbox.reject_deferred", "debug")) >= 2,
                           what="retries")
            assert db_rows(tmp_path, "SELECT state FROM inputs") == [{"state": "rejected"}]
            assert len(spool(tmp_path)) == 1  # kept in the spool meanwhile
            assert (tmp_path / "inbox" / "tweets" / "link.txt").is_symlink()
            await still_works(tmp_path, sandbox)  # the rest of the daemon is not blocked
            unblock(rejected_dir)
            await drained(service)
            assert (
                outcome(tmp_path, "tweets", "bad.txt") == "rejected"
                and outcome(tmp_path, "tweets", "link.txt") == "rejected"
            )
    assert (rejected_dir / "bad.txt").read_bytes() == b"123\nabc\n"
    assert rejected(tmp_path, "bad.txt")[1]["bad_lines"][0]["line"] == 2
    assert (rejected_dir / "link.txt").is_symlink()
    assert len(events(logs, "outbox.reject_deferred", "warning")) == 1
    assert len(events(logs, "inbox.reject_deferred", "warning")) == 1
    assert spool(tmp_path) == []


@pytest.mark.parametrize("how", ["replaced-by-a-file", "chattr-immutable"])
async def test_results_folder_not_writable_then_fixed_delivers_without_a_new_job(
    tmp_path: Path, sandbox: Sandbox, config: Config, how: str
) -> None:
    out = tmp_path / "outbox" / "tweets"
    ids = make_ids(73, 50)
    with structlog.testing.capture_logs() as logs, contextlib.ExitStack() as stack:
        async with running_service(config) as service:
            if how == "chattr-immutable":
                stack.enter_context(immutable(out))
            else:
                blocked_by_a_file(out)
            drop(tmp_path, "tweets", "waits.txt", ids)
            await wait_for(lambda: len(events(logs, "outbox.write_failed")) >= 2,
                           what="delivery retried")
            assert outcome(tmp_path, "tweets", "waits.txt") is None
            assert db_rows(tmp_path, "SELECT state FROM batches") == [{"state": "delivering"}]
            if how == "chattr-immutable":
                stack.close()
            else:
                unblock(out)
            await drained(service)
            assert outcome(tmp_path, "tweets", "waits.txt") == "delivered"
    assert read_results(tmp_path, "tweets", "waits") == sandbox.expected_results("tweets", ids)
    assert len(sandbox.jobs()) == 1, "waiting for the outbox must not cost a new remote job"
    assert events(logs, "outbox.write_failed")[0]["log_level"] == "warning"
    assert spool(tmp_path) == []


async def test_a_failing_maintenance_round_does_not_stop_the_daemon(
    tmp_path: Path, sandbox: Sandbox, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Store.inputs_in
    rounds = {"maintenance": 0}

    async def flaky(self: Store, states: Any) -> Any:
        if sys._getframe(1).f_code.co_name == "maintenance":
            rounds["maintenance"] += 1
            if rounds["maintenance"] == 1:
                raise RuntimeError("database hiccup")
        return await real(self, states)

    monkeypatch.setattr(Store, "inputs_in", flaky)
    with structlog.testing.capture_logs() as logs:
        async with running_service(config):
            await wait_for(lambda: rounds["maintenance"] >= 2, what="a later maintenance round")
            await still_works(tmp_path, sandbox)
    assert len(events(logs, "intake.maintenance_failed", "error")) == 1


async def test_rejected_folder_not_writable_at_start_does_not_stop_the_daemon(
    tmp_path: Path, sandbox: Sandbox, config: Config
) -> None:
    (tmp_path / "outbox").mkdir()
    (tmp_path / "outbox" / "rejected").write_text("not a folder\n")
    async with running_service(config):
        await still_works(tmp_path, sandbox)
