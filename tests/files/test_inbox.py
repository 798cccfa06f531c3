"""Inbox scanning: stability, ignored names, invalid entries, and the watch loop."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest
from clocks import FakeClock
from inbox_helpers import read_permission_as_unprivileged, running_watch
from structlog.testing import capture_logs

from orchestrator.core.model import JobType
from orchestrator.files import watch as watch_module
from orchestrator.files.inbox import (
    NOT_IN_TYPE_FOLDER,
    Candidate,
    InboxScanner,
    InvalidEntry,
    changed_since,
)

MIN_AGE = 5.0
DEADLINE_S = 10.0  # generous bound for conditions in real-time tests; never a timed assertion


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.fromtimestamp(2_000_000_000.0, UTC), mono=1000.0)


@pytest.fixture
def scanner(tmp_path: Path, clock: FakeClock) -> InboxScanner:
    s = InboxScanner(
        tmp_path / "inbox",
        min_age_s=MIN_AGE,
        clock=clock,
    )
    s.ensure_folders()
    return s


def put(scanner: InboxScanner, clock: FakeClock, rel: str, data: bytes = b"1\n") -> Path:
    """Write a file whose mtime is the fake wall clock's now."""
    path = scanner.inbox / rel
    path.write_bytes(data)
    os.utime(path, ns=(int(clock.wall * 1e9), int(clock.wall * 1e9)))
    return path


def claimable(scanner: InboxScanner) -> list[str]:
    return [c.path.name for c in scanner.scan()[0]]


def test_ensure_folders_creates_what_is_missing(tmp_path: Path) -> None:
    s = InboxScanner(tmp_path / "in", min_age_s=1)
    assert s.ensure_folders() == [tmp_path / "in", tmp_path / "in/tweets", tmp_path / "in/users"]
    assert s.ensure_folders() == []
    (tmp_path / "in/users").rmdir()
    assert s.ensure_folders() == [tmp_path / "in/users"]


def test_file_becomes_a_candidate_only_after_min_age_unchanged(
    scanner: InboxScanner, clock: FakeClock
) -> None:
    put(scanner, clock, "tweets/a.txt")
    assert claimable(scanner) == []  # first sighting starts the clock
    assert scanner.next_due_in() == pytest.approx(MIN_AGE)
    clock.advance(MIN_AGE - 0.1)
    assert claimable(scanner) == []
    clock.advance(0.1)
    [candidate] = scanner.scan()[0]
    assert candidate.job_type is JobType.TWEETS
    assert candidate.size == 2
    assert candidate.inode == (scanner.inbox / "tweets/a.txt").stat().st_ino
    assert scanner.next_due_in() is None


def test_file_still_being_written_is_not_claimed_until_it_stops(
    scanner: InboxScanner, clock: FakeClock
) -> None:
    path = put(scanner, clock, "users/growing.txt")
    for _ in range(5):  # appended to every 3 s: each change restarts the clock
        assert claimable(scanner) == []
        clock.advance(3)
        with open(path, "ab") as f:
            f.write(b"2\n")
        os.utime(path, ns=(int(clock.wall * 1e9), int(clock.wall * 1e9)))
    assert claimable(scanner) == []
    clock.advance(MIN_AGE)
    assert claimable(scanner) == ["growing.txt"]


def test_recent_mtime_holds_a_file_back_even_if_seen_long_ago(
    scanner: InboxScanner, clock: FakeClock
) -> None:
    path = put(scanner, clock, "tweets/a.txt")
    scanner.scan()
    clock.mono += 60  # the daemon was busy; wall clock says the file is only 2 s old
    os.utime(path, ns=(int((clock.wall - 2) * 1e9),) * 2)
    scanner.scan()  # mtime changed: seen anew
    clock.mono += MIN_AGE
    assert claimable(scanner) == []
    assert scanner.next_due_in() == pytest.approx(3.0)
    clock.wall += 3
    assert claimable(scanner) == ["a.txt"]


def test_future_mtime_does_not_block_forever(scanner: InboxScanner, clock: FakeClock) -> None:
    path = put(scanner, clock, "tweets/a.txt")
    os.utime(path, ns=(int((clock.wall + 86400) * 1e9),) * 2)  # skewed clock of a producer
    scanner.scan()
    clock.advance(MIN_AGE)
    assert claimable(scanner) == ["a.txt"]


def test_replaced_file_restarts_the_clock(scanner: InboxScanner, clock: FakeClock) -> None:
    put(scanner, clock, "tweets/a.txt", b"1\n")
    scanner.scan()
    clock.advance(MIN_AGE - 1)
    tmp = put(scanner, clock, "tweets/.a.txt.swap", b"2\n")
    os.utime(tmp, ns=(int((clock.wall - 4) * 1e9),) * 2)
    tmp.replace(scanner.inbox / "tweets/a.txt")  # renamed over: same size, new inode
    clock.advance(1)
    assert claimable(scanner) == []
    clock.advance(MIN_AGE)
    assert claimable(scanner) == ["a.txt"]


def test_ignored_names_are_never_listed(scanner: InboxScanner, clock: FakeClock) -> None:
    for rel in ("tweets/.hidden", "tweets/x.part", "users/y.tmp", "users/Z.PART", ".dot", "a.part"):
        put(scanner, clock, rel)
    (scanner.inbox / "lost+found").mkdir()
    scanner.scan()
    clock.advance(MIN_AGE)
    assert scanner.scan() == ([], [])
    assert scanner.next_due_in() is None


def test_awkward_names_are_ordinary_candidates_sorted_by_mtime_then_name(
    scanner: InboxScanner, clock: FakeClock
) -> None:
    put(scanner, clock, "users/-rf --no-preserve-root")
    put(scanner, clock, "users/tweet ids (copy).txt")
    put(scanner, clock, "tweets/ünïcödé 🐦.txt")
    clock.advance(-10)
    put(scanner, clock, "tweets/zz older.txt")
    clock.advance(10)
    scanner.scan()
    clock.advance(MIN_AGE)
    assert claimable(scanner) == [
        "zz older.txt",
        "-rf --no-preserve-root",
        "tweet ids (copy).txt",
        "ünïcödé 🐦.txt",
    ]


def invalid_after_quiet_period(scanner: InboxScanner, clock: FakeClock) -> dict[str, InvalidEntry]:
    assert scanner.scan()[1] == []  # invalid entries wait for the same quiet period
    clock.advance(MIN_AGE)
    candidates, invalid = scanner.scan()
    assert candidates == []
    return {e.path.name: e for e in invalid}


def test_entries_that_cannot_be_claimed_are_reported_with_a_reason(
    scanner: InboxScanner, clock: FakeClock, tmp_path: Path
) -> None:
    (tmp_path / "elsewhere").write_text("1\n")
    (scanner.inbox / "tweets/link.txt").symlink_to(tmp_path / "elsewhere")
    (scanner.inbox / "tweets/sub").mkdir()
    os.mkfifo(scanner.inbox / "users/pipe")
    put(scanner, clock, "stray.txt")
    (scanner.inbox / "Tweets").mkdir()
    found = invalid_after_quiet_period(scanner, clock)
    assert {name: (e.job_type, e.reason) for name, e in found.items()} == {
        "link.txt": (JobType.TWEETS, "symlink (not followed)"),
        "sub": (JobType.TWEETS, "directory"),
        "pipe": (JobType.USERS, "fifo"),
        "stray.txt": (None, NOT_IN_TYPE_FOLDER),
        "Tweets": (None, NOT_IN_TYPE_FOLDER),
    }
    assert (tmp_path / "elsewhere").read_text() == "1\n"  # never followed


def test_unreadable_file_is_reported(
    scanner: InboxScanner, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = put(scanner, clock, "users/locked.txt")
    path.chmod(0)
    read_permission_as_unprivileged(monkeypatch)
    found = invalid_after_quiet_period(scanner, clock)
    assert found["locked.txt"].reason == "no read permission"


def test_type_folder_may_be_a_symlink_to_a_directory(
    scanner: InboxScanner, clock: FakeClock, tmp_path: Path
) -> None:
    (scanner.inbox / "users").rmdir()
    (tmp_path / "users-elsewhere").mkdir()
    (scanner.inbox / "users").symlink_to(tmp_path / "users-elsewhere")
    put(scanner, clock, "users/u.txt")
    scanner.scan()
    clock.advance(MIN_AGE)
    assert [(c.path.name, c.job_type) for c in scanner.scan()[0]] == [("u.txt", JobType.USERS)]


def test_missing_folders_do_not_break_a_scan(tmp_path: Path) -> None:
    assert InboxScanner(tmp_path / "nothing", min_age_s=1).scan() == ([], [])


# --- the watch loop (real time, small min_age; waits on events with a deadline) ----------


class Recorder:
    """Callbacks that claim like the daemon (move the file away) and signal each call."""

    def __init__(self, claimed_dir: Path) -> None:
        self.claimed_dir = claimed_dir
        claimed_dir.mkdir(exist_ok=True)
        self.candidates: list[Candidate] = []
        self.invalid: list[InvalidEntry] = []
        self.fail_next = 0
        self.changed = anyio.Event()

    def _signal(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    async def on_candidate(self, candidate: Candidate) -> None:
        if self.fail_next:
            self.fail_next -= 1
            self._signal()
            raise RuntimeError("database is locked; see https://x.test/?X-Goog-Signature=s3cr3t")
        candidate.path.rename(self.claimed_dir / candidate.path.name)
        self.candidates.append(candidate)
        self._signal()

    async def on_invalid(self, entry: InvalidEntry) -> None:
        self.invalid.append(entry)
        self._signal()

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        with anyio.fail_after(DEADLINE_S):
            while not condition():
                await self.changed.wait()


def drop(folder: Path, name: str, data: bytes = b"1\n") -> Path:
    part = folder / f"{name}.part"
    part.write_bytes(data)
    return part.rename(folder / name)


@pytest.mark.parametrize("use_watcher", [True, False])
async def test_watch_claims_dropped_files_soon_after_they_settle(
    tmp_path: Path, use_watcher: bool
) -> None:
    inbox = tmp_path / "inbox"  # missing at start: created
    scanner = InboxScanner(inbox, min_age_s=0.05)
    rec = Recorder(tmp_path / "claimed")
    with capture_logs() as logs:
        # A long rescan interval: only events and the "due" wake-up can claim in time.
        async with running_watch(
            scanner, rec, rescan_interval_s=3600 if use_watcher else 0.2, use_watcher=use_watcher
        ) as stop:
            assert (inbox / "tweets").is_dir() and (inbox / "users").is_dir()
            drop(inbox / "tweets", "a b.txt")
            drop(inbox / "users", "-ü.txt")
            await rec.wait_for(lambda: len(rec.candidates) == 2)
            stop.set()
    assert sorted(c.path.name for c in rec.candidates) == ["-ü.txt", "a b.txt"]
    assert sorted((tmp_path / "claimed").iterdir()) == sorted(
        [tmp_path / "claimed/-ü.txt", tmp_path / "claimed/a b.txt"]
    )
    created = [e for e in logs if e["event"] == "inbox.folder_created"]
    assert len(created) == 3 and all(e["at_start"] for e in created)


async def test_watch_retries_failed_callbacks_and_reports_invalid_once(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    scanner = InboxScanner(inbox, min_age_s=0.05)
    scanner.ensure_folders()
    os.mkfifo(inbox / "tweets" / "pipe")
    rec = Recorder(tmp_path / "claimed")
    rec.fail_next = 2
    with capture_logs() as logs:
        async with running_watch(scanner, rec, rescan_interval_s=0.05, use_watcher=False):
            drop(inbox / "users", "ids.txt")
            await rec.wait_for(lambda: len(rec.candidates) == 1)
            # Several more scans pass; the unchanged fifo is not reported again.
            scans = scanner.scan
            count = 0

            def counting_scan():  # type: ignore[no-untyped-def]
                nonlocal count
                count += 1
                return scans()

            scanner.scan = counting_scan  # type: ignore[method-assign]
            with anyio.fail_after(DEADLINE_S):
                while count < 5:
                    await anyio.sleep(0.01)
    assert [e.reason for e in rec.invalid] == ["fifo"]
    failures = [e for e in logs if e["event"] == "inbox.callback_failed"]
    assert len(failures) == 2
    assert failures[0]["file"] == "ids.txt" and failures[0]["error"] == "RuntimeError"
    assert "s3cr3t" not in failures[0]["error_msg"]


async def test_watch_recreates_folders_deleted_at_run_time(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    scanner = InboxScanner(inbox, min_age_s=0.05)
    rec = Recorder(tmp_path / "claimed")
    with capture_logs() as logs:
        async with running_watch(scanner, rec, rescan_interval_s=0.05, use_watcher=True):
            (inbox / "users").rmdir()
            with anyio.fail_after(DEADLINE_S):
                while not (inbox / "users").is_dir():
                    await anyio.sleep(0.01)
            drop(inbox / "users", "after.txt")
            await rec.wait_for(lambda: len(rec.candidates) == 1)
    recreated = [e for e in logs if e["event"] == "inbox.folder_created" and not e["at_start"]]
    assert [e["folder"] for e in recreated] == [str(inbox / "users")]


async def test_watch_falls_back_to_rescans_when_inotify_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_inotify(*args: object, **kwargs: object) -> object:
        raise OSError(28, "inotify watch limit reached")

    monkeypatch.setattr(watch_module, "awatch", no_inotify)
    inbox = tmp_path / "inbox"
    scanner = InboxScanner(inbox, min_age_s=0.05)
    rec = Recorder(tmp_path / "claimed")
    with capture_logs() as logs:
        async with running_watch(scanner, rec, rescan_interval_s=0.1, use_watcher=True):
            drop(inbox / "tweets", "t.txt")
            await rec.wait_for(lambda: len(rec.candidates) == 1)
    warnings = [e for e in logs if e["event"] == "inbox.watcher_unavailable"]
    assert len(warnings) == 1 and warnings[0]["error"] == "OSError"


async def test_stop_event_ends_the_watch(tmp_path: Path) -> None:
    scanner = InboxScanner(tmp_path / "inbox", min_age_s=0.05)
    rec = Recorder(tmp_path / "claimed")
    with anyio.fail_after(DEADLINE_S):
        async with running_watch(scanner, rec, rescan_interval_s=3600, use_watcher=True) as stop:
            stop.set()  # the watch then returns on its own (within the deadline)


async def test_watch_recreates_a_deleted_inbox_root_and_watches_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    watched: list[Path] = []
    real_awatch = watch_module.awatch

    def counting_awatch(path: Path, **kwargs: object):  # type: ignore[no-untyped-def]
        watched.append(path)
        return real_awatch(path, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(watch_module, "awatch", counting_awatch)
    inbox = tmp_path / "inbox"
    scanner = InboxScanner(inbox, min_age_s=0.05)
    rec = Recorder(tmp_path / "claimed")
    with capture_logs() as logs:
        async with running_watch(scanner, rec, rescan_interval_s=0.1, use_watcher=True):
            inbox.rename(tmp_path / "old-inbox")  # the whole root disappears at once
            with anyio.fail_after(DEADLINE_S):
                while not (inbox / "tweets").is_dir():
                    await anyio.sleep(0.01)
            drop(inbox / "tweets", "t.txt")
            await rec.wait_for(lambda: len(rec.candidates) == 1)
    assert watched == [inbox, inbox]
    recreated = {e["folder"] for e in logs if e["event"] == "inbox.folder_created"}
    assert str(inbox) in recreated


# --- changed_since: did a claimed file change after it was validated? -----------------------


def test_a_link_count_change_alone_is_no_change_when_the_bytes_are_the_same(
    tmp_path: Path,
) -> None:
    """`ln` + removing the producer's own name, a requeue, rsync: the ctime moves, nothing
    else. With the validated hash that is not a change; a same-size rewrite with its mtime
    put back is one."""
    path = tmp_path / "claimed.tweets"
    path.write_bytes(b"1\n2\n3\n")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    seen = path.stat()
    for _ in range(10_000):  # the ctime clock is coarse: link until it moved
        os.link(path, tmp_path / "extra")
        (tmp_path / "extra").unlink()
        if path.stat().st_ctime_ns != seen.st_ctime_ns:
            break
    assert path.stat().st_ctime_ns != seen.st_ctime_ns
    validated = (seen.st_size, seen.st_mtime_ns, seen.st_ctime_ns)
    assert changed_since(path, *validated, sha) is None
    assert changed_since(path, *validated) is not None  # no hash to tell: a change
    path.write_bytes(b"1\n2\n4\n")
    os.utime(path, ns=(seen.st_atime_ns, seen.st_mtime_ns))
    assert changed_since(path, *validated, sha) == (
        "rewritten or touched after it was validated (6 bytes)")


def test_a_stale_part_file_is_warned_about_once(tmp_path: Path, clock: FakeClock) -> None:
    s = InboxScanner(tmp_path / "inbox", min_age_s=MIN_AGE, clock=clock, stale_part_warn_s=3600)
    s.ensure_folders()
    part = put(s, clock, "tweets/big.txt.part")
    put(s, clock, "tweets/fresh.txt.part")
    with capture_logs() as events:
        s.scan()
        clock.advance(1800)
        os.utime(tmp_path / "inbox/tweets/fresh.txt.part",
                 ns=(int(clock.wall * 1e9), int(clock.wall * 1e9)))  # still being written
        s.scan()
        clock.advance(1801)
        s.scan()
        s.scan()
    stale = [e for e in events if e["event"] == "inbox.stale_part"]
    assert [(e["path"], e["log_level"]) for e in stale] == [(str(part), "warning")]
    assert stale[0]["age_s"] == 3601
    assert claimable(s) == []  # a .part is never input, stale or not
    part.rename(part.with_name("again.part"))  # a new file: its own warning
    with capture_logs() as events:
        s.scan()
    assert [e["path"] for e in events if e["event"] == "inbox.stale_part"] == [
        str(part.with_name("again.part"))]


def test_stale_part_warnings_are_off_by_default_in_the_scanner(
    scanner: InboxScanner, clock: FakeClock
) -> None:
    put(scanner, clock, "tweets/old.part")
    clock.advance(10 * 86400)
    with capture_logs() as events:
        scanner.scan()
    assert [e for e in events if e["event"] == "inbox.stale_part"] == []
