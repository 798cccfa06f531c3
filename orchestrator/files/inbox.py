"""Find inbox files that are ready to claim, and report entries that can never be claimed.

The folder is the job type: `inbox/tweets/` and `inbox/users/`. A regular file becomes a
candidate once it has stopped changing for `min_age_s`; symlinks, directories, fifos, files in
the inbox root and unreadable files are reported as invalid (after the same quiet period, so a
producer that is still busy is not interrupted). Producers write `name.part` (or a dotfile) and
rename it into place; those names are ignored.

The scanner only looks when asked; watch.py decides when (watchfiles events, rescans).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import structlog

from orchestrator.clock import SYSTEM_CLOCK, Clock
from orchestrator.core.model import JobType
from orchestrator.files.atomic import file_sha256
from orchestrator.redact import redact_text

log = structlog.get_logger(__name__)

IGNORED_SUFFIXES = (".part", ".tmp")
# Never treat these as stray input: the filesystem's own folder when the inbox is a mount point.
IGNORED_NAMES = frozenset({"lost+found"})
NOT_IN_TYPE_FOLDER = "not in a type folder (put it in tweets/ or users/)"


def is_ignored_name(name: str) -> bool:
    """Dotfiles, `*.part` and `*.tmp` are work in progress (or ours), never input."""
    return name.startswith(".") or name.lower().endswith(IGNORED_SUFFIXES) or name in IGNORED_NAMES



@dataclass(frozen=True)
class Candidate:
    path: Path
    job_type: JobType
    size: int
    mtime_ns: int
    inode: int
    ctime_ns: int = 0


@dataclass(frozen=True)
class InvalidEntry:
    path: Path
    job_type: JobType | None
    reason: str
    size: int = 0
    mtime_ns: int = 0
    inode: int = 0

    @property
    def key(self) -> tuple[str, int, int, int]:
        """Same key = same unchanged entry (it is reported once)."""
        return (self.reason, self.size, self.mtime_ns, self.inode)


@dataclass(frozen=True)
class _Seen:
    signature: tuple[int, int, int]  # size, mtime_ns, inode
    since: float  # monotonic time of the first sighting with this signature


def _is_readable(path: Path) -> bool:
    return os.access(path, os.R_OK)


def entry_kind(mode: int) -> str:
    """What an entry is, in words for logs and error records (`file` for a regular one)."""
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "file"


def _entry_problem(st: os.stat_result, path: Path) -> str | None:
    """Why an entry in a type folder cannot be claimed, or None for a claimable file."""
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return "symlink (not followed)"
    kind = entry_kind(mode)
    if kind != "file":
        return kind
    if not stat.S_ISREG(mode):
        return "device"  # nothing a producer writes (a door, a whiteout): never claimed
    if not _is_readable(path):
        return "no read permission"
    return None


def display_name(name: str) -> str:
    """A file name as text SQLite, JSON and logs accept: undecodable bytes become `\\xNN`.

    Only for showing: two names can share a display form, so a file is found again by its
    raw bytes (`os.fsencode(name)`, kept as `inputs.name_bytes`), never by this.
    """
    return os.fsencode(name).decode("utf-8", errors="backslashreplace")


# Bidirectional overrides, embeddings, isolates and marks: they reorder what a terminal shows
# ("evil\u202etxt.exe"), so a name could pose as another.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: object) -> str:
    """`text` safe to print on an operator's terminal: C0 and C1 controls, DEL and bidi
    controls become `\\xNN` / `\\uNNNN`, so a producer's file name cannot send escape
    sequences (clear the screen, retitle the window, fake a line). For human output only:
    JSON output is escaped by json.dumps and stays exact."""
    out = []
    for char in str(text):
        code = ord(char)
        if code < 0x20 or 0x7F <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        elif char in _BIDI:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def changed_since(path: Path, size: int, mtime_ns: int | None, ctime_ns: int | None,
                  sha256: str | None = None) -> str | None:
    """How the claimed file at `path` differs from what was validated, or None if it does
    not (or is gone: then there is nothing left to compare).

    A producer that skips the `.part` rename may still be writing through its open file
    after the claim moved the file into the spool: its data lands in our copy.

    The ctime alone also moves when only the link count does (a producer publishing with
    `ln` and removing its own name, a requeue unlinking the rejected/ name of the same
    inode, rsync): with the validated `sha256`, a change of the ctime alone counts only if
    the content differs too. Reads the whole file then: call it from a worker thread.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if st.st_size != size:
        return f"{st.st_size} bytes now, {size} bytes when it was validated"
    if mtime_ns is not None and st.st_mtime_ns != mtime_ns:
        return f"modified again after it was validated ({size} bytes)"
    if ctime_ns is not None and st.st_ctime_ns != ctime_ns:
        if sha256 is not None and _same_sha256(path, sha256):
            return None
        return f"rewritten or touched after it was validated ({size} bytes)"
    return None


def _same_sha256(path: Path, sha256: str) -> bool:
    try:
        return file_sha256(path) == sha256
    except FileNotFoundError:
        return True  # gone: nothing left to compare (as above)


class InboxScanner:
    """One-pass scans with stability tracking between passes (not thread-safe: one at a time)."""

    def __init__(
        self,
        inbox: Path,
        *,
        min_age_s: float,
        clock: Clock = SYSTEM_CLOCK,
        stale_part_warn_s: float = 0.0,
    ) -> None:
        self.inbox = inbox
        self.min_age_s = min_age_s
        self.folders = {job_type: inbox / job_type.value for job_type in JobType}
        self._clock = clock
        self._seen: dict[Path, _Seen] = {}
        self._next_due: float | None = None
        self._folder_errors: dict[Path, str] = {}
        # A `.part` older than this is a producer that died before its rename: one warning
        # per file (path and inode), so that it does not sit there unnoticed. 0: off.
        self.stale_part_warn_s = stale_part_warn_s
        self._stale_parts: set[tuple[Path, int]] = set()
        self._parts_now: set[tuple[Path, int]] = set()

    def ensure_folders(self) -> list[Path]:
        """Create the inbox and its type folders if missing; return the ones created."""
        created: list[Path] = []
        for path in (self.inbox, *self.folders.values()):
            if path.is_dir():
                continue
            try:
                path.mkdir(parents=True)
            except FileExistsError:
                continue  # a race, or a stray file with that name (scan reports it)
            created.append(path)
        return created

    def next_due_in(self) -> float | None:
        """Seconds until the earliest pending entry may become stable (None: nothing pending)."""
        if self._next_due is None:
            return None
        return max(0.0, self._next_due - self._clock.monotonic())

    def scan(self) -> tuple[list[Candidate], list[InvalidEntry]]:
        """One pass: stable candidates sorted by (mtime, name), and stable invalid entries."""
        now = self._clock.monotonic()
        wall = self._clock.now().timestamp()
        seen: dict[Path, _Seen] = {}
        due: list[float] = []
        candidates: list[Candidate] = []
        invalid: list[InvalidEntry] = []
        self._parts_now = set()

        def stable(path: Path, st: os.stat_result) -> bool:
            signature = (st.st_size, st.st_mtime_ns, st.st_ino)
            previous = self._seen.get(path)
            since = previous.since if previous and previous.signature == signature else now
            seen[path] = _Seen(signature, since)
            ready_at = since + self.min_age_s
            wall_age = wall - st.st_mtime_ns / 1e9
            # A future mtime (skewed NFS clock, `touch -d`) would never age: the monotonic
            # check alone then proves the file is quiet.
            if 0 <= wall_age < self.min_age_s:
                ready_at = max(ready_at, now + self.min_age_s - wall_age)
            if ready_at <= now:
                return True
            due.append(ready_at)
            return False

        for entry, st in self._entries(self.inbox):
            path = Path(entry.path)
            type_folder = self._type_folder(entry.name, path, st)
            if type_folder is not None:
                for sub, sub_st in self._entries(path):
                    sub_path = Path(sub.path)
                    if not stable(sub_path, sub_st):
                        continue
                    problem = _entry_problem(sub_st, sub_path)
                    if problem is None:
                        candidates.append(
                            Candidate(
                                sub_path,
                                type_folder,
                                sub_st.st_size,
                                sub_st.st_mtime_ns,
                                sub_st.st_ino,
                                sub_st.st_ctime_ns,
                            )
                        )
                    else:
                        invalid.append(_invalid(sub_path, type_folder, problem, sub_st))
            elif stable(path, st):
                invalid.append(_invalid(path, None, NOT_IN_TYPE_FOLDER, st))

        self._seen = seen  # forget entries that are gone (claimed, removed)
        self._stale_parts &= self._parts_now  # renamed or removed: warn again if it recurs
        self._next_due = min(due) if due else None
        candidates.sort(key=lambda c: (c.mtime_ns, c.path.name))
        return candidates, invalid

    def _type_folder(self, name: str, path: Path, st: os.stat_result) -> JobType | None:
        # A type folder may be a symlink to a directory elsewhere (the operator's choice).
        is_dir = stat.S_ISDIR(st.st_mode) or (stat.S_ISLNK(st.st_mode) and path.is_dir())
        for job_type, folder in self.folders.items():
            if name == folder.name and is_dir:
                return job_type
        return None

    def _entries(self, folder: Path) -> list[tuple[os.DirEntry[str], os.stat_result]]:
        """Non-ignored entries of `folder` with their lstat; problems logged once per change."""
        try:
            with os.scandir(folder) as it:
                listed = list(it)
        except FileNotFoundError:
            return []  # watch_inbox recreates missing folders
        except OSError as exc:
            message = redact_text(str(exc))
            if self._folder_errors.get(folder) != message:
                self._folder_errors[folder] = message
                log.warning(
                    "inbox.scan_failed",
                    folder=str(folder),
                    error=type(exc).__name__,
                    error_msg=message,
                )
            return []
        self._folder_errors.pop(folder, None)
        entries = [e for e in listed if not is_ignored_name(e.name)]
        if self.stale_part_warn_s > 0:
            self._warn_stale_parts([e for e in listed if e.name.endswith(".part")])
        result = []
        for entry in entries:
            try:
                result.append((entry, entry.stat(follow_symlinks=False)))
            except FileNotFoundError:
                continue  # claimed or removed since the listing
        return result


    def _warn_stale_parts(self, parts: list[os.DirEntry[str]]) -> None:
        wall = self._clock.now().timestamp()
        for entry in parts:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            key = (Path(entry.path), st.st_ino)
            age = wall - st.st_mtime_ns / 1e9
            if age < self.stale_part_warn_s:
                continue
            self._parts_now.add(key)
            if key not in self._stale_parts:
                self._stale_parts.add(key)
                log.warning("inbox.stale_part", path=display_name(entry.path),
                            age_s=round(age), size_bytes=st.st_size,
                            detail="a producer wrote this .part file but never renamed it; "
                            "finish the rename or remove it")


def _invalid(path: Path, job_type: JobType | None, reason: str, st: os.stat_result) -> InvalidEntry:
    return InvalidEntry(path, job_type, reason, st.st_size, st.st_mtime_ns, st.st_ino)
