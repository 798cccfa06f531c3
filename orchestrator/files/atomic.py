"""Crash-safe file placement: temp file + fsync + rename, copies, and free-name candidates.

Every writer here assumes kill -9 at any line: a reader sees either the old state or the
complete new file, never a partial one. Temp files are named `.tmp-<name>-<random>` in the
destination folder (a rename is atomic only within one filesystem, and dotfiles are ignored by
the inbox) and are swept by `cleanup_temp_files` at startup.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path, PurePath
from typing import Any, BinaryIO

import structlog

from orchestrator.clock import SYSTEM_CLOCK, Clock
from orchestrator.core.model import format_timestamp

log = structlog.get_logger(__name__)

TEMP_PREFIX = ".tmp-"
NAME_MAX_BYTES = 255  # NAME_MAX on Linux filesystems
COPY_BUFFER = 1024 * 1024
# What a copy we make of someone's file may keep of its mode: read/write for its owner (us),
# read for the group. Never setuid, setgid or sticky (a root-made copy would be setuid root).
COPY_MODE_MASK = 0o640


def copy_mode(mode: int) -> int:
    """The permission bits for our copy of a file that had `mode`: 0600 or 0640."""
    return (stat.S_IMODE(mode) & COPY_MODE_MASK) | stat.S_IRUSR | stat.S_IWUSR


# Free space a copy must leave behind: the state database and the logs share the disk.
DEFAULT_MIN_FREE_BYTES = 64 * 1024 * 1024


class NoRoom(OSError):
    """A copy was not started: it would leave less than the required free space (ENOSPC)."""

    def __init__(self, folder: Path, needed: int, free: int, min_free: int) -> None:
        super().__init__(
            errno.ENOSPC,
            f"not enough free space in {folder.name}/ for {needed} bytes: {free} free, "
            f"{min_free} must stay free",
        )
        self.needed = needed
        self.free = free
        self.min_free = min_free


def free_bytes(folder: Path) -> int:
    """Bytes an unprivileged writer may still use on `folder`'s filesystem."""
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def ensure_room(folder: Path, needed: int, min_free: int = DEFAULT_MIN_FREE_BYTES) -> None:
    """Raise NoRoom unless `needed` bytes fit in `folder` with `min_free` bytes to spare.

    Checked before every copy of someone's file: a copy that cannot fit would fill the disk
    (the database then fails with SQLITE_FULL), be undone, and be tried again and again.
    """
    free = free_bytes(folder)
    if needed + min_free > free:
        raise NoRoom(folder, needed, free, min_free)


# Work in a thread calls a `progress()` callback (no arguments) every so often, so that the
# lane it runs for keeps its heartbeat (and the systemd watchdog) fresh: hashing or splitting
# a 100M-ID batch takes minutes. The callback must be cheap and thread-safe.
Progress = Callable[[], None]

def fsync_dir(path: Path) -> None:
    """Make a rename/create/unlink inside `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some filesystems (certain FUSE/network mounts) cannot fsync a directory at all.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def truncate_name(name: str, max_bytes: int) -> str:
    """`name` cut (on a UTF-8 character boundary) to at most `max_bytes` bytes."""
    raw = os.fsencode(name)
    if len(raw) <= max_bytes:
        return name
    # Cut on a UTF-8 character boundary so the shortened name stays readable.
    cut = raw[:max_bytes].decode("utf-8", errors="ignore")
    return cut or os.fsdecode(raw[:max_bytes])


# On folders shared by several hosts, a temp name carries its writer's tag (set_temp_owner),
# so that a host starting up removes the leftovers of its own crash, never another host's
# write in progress: `.tmp-<name>-<tag 8 hex><random 8 hex>`.
_owner_tag = ""


def owner_tag(owner: str) -> str:
    """The 8-hex tag of a host id in temp names."""
    return hashlib.sha256(owner.encode()).hexdigest()[:8]


def set_temp_owner(owner: str | None) -> None:
    """Tag this process's temp names with `owner` (a host id), or stop tagging (None)."""
    global _owner_tag
    _owner_tag = "" if owner is None else owner_tag(owner)


def temp_path_for(dest: Path) -> Path:
    """A fresh temp name beside `dest` (same filesystem, so the final rename is atomic)."""
    stem = truncate_name(dest.name, NAME_MAX_BYTES - len(TEMP_PREFIX) - 17)
    return dest.with_name(f"{TEMP_PREFIX}{stem}-{_owner_tag}{secrets.token_hex(4)}")


def _tagged(name: str, tag: str) -> bool:
    """Whether temp file `name` was written by the owner of `tag`."""
    return name[-17:-8] == f"-{tag}"


@contextlib.contextmanager
def atomic_output(dest: Path) -> Iterator[BinaryIO]:
    """Yield a binary file that becomes `dest` (fsynced) only if the block ends without error."""
    tmp = temp_path_for(dest)
    # 0o666 & ~umask, like any new file; mkstemp's 0600 would hide results from readers.
    # Read-write, so a writer may os.pread() what it wrote (to hash it without reopening).
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    with _into_place(tmp, dest), os.fdopen(fd, "wb", buffering=COPY_BUFFER) as out:
        yield out
        out.flush()
        os.fsync(out.fileno())


@contextlib.contextmanager
def _into_place(tmp: Path, dest: Path) -> Iterator[None]:
    """The block makes `tmp` whole and durable; then it replaces `dest` and the folder is
    fsynced. On any error (or cancellation) `tmp` is removed and `dest` stays as it was."""
    try:
        yield
        tmp.replace(dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(dest.parent)


def atomic_write_file(
    dest: Path, src: Path | None = None, *, data: bytes | None = None, allow_link: bool = False
) -> None:
    """Place a copy of `src` (streamed) or `data` at `dest` atomically; `src` is never consumed.

    With `allow_link`, a regular `src` on the same filesystem is hard-linked instead of copied
    (no data copy; `src` stays in place). Only use it when nobody modifies `src` in place later:
    both names then share one inode.
    """
    if (src is None) == (data is None):
        raise ValueError("give exactly one of src or data")
    if src is not None and allow_link and _link_into_place(src, dest):
        return
    with atomic_output(dest) as out:
        if data is not None:
            out.write(data)
        else:
            assert src is not None
            with open(src, "rb") as inp:
                shutil.copyfileobj(inp, out, COPY_BUFFER)


def atomic_write_files(files: list[tuple[Path, bytes]]) -> None:
    """atomic_write_file(dest, data=...) for many files, with one fsync per folder instead of
    one per file (a pack of 1,000 inputs is split into 1,000 files). Each file is whole and
    durable before any is renamed into place; on an error no temp file is left."""
    placed: list[tuple[Path, Path]] = []
    try:
        for dest, data in files:
            tmp = temp_path_for(dest)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            placed.append((tmp, dest))
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
        for tmp, dest in placed:
            tmp.replace(dest)
    except BaseException:
        for tmp, _ in placed:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise
    for folder in {dest.parent for _, dest in placed}:
        fsync_dir(folder)


class _Mismatch(Exception):
    """The bytes copied are not the ones expected (raised inside atomic_output to discard)."""


def file_sha256(path: Path, progress: Progress | None = None) -> str:
    """sha256 of a file, streamed; `progress()` after every block."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(COPY_BUFFER):
            digest.update(block)
            if progress is not None:
                progress()
    return digest.hexdigest()


def atomic_copy_verified(src: Path, dest: Path, sha256: str) -> bool:
    """Copy `src` to `dest` atomically only if the bytes read hash to `sha256`.

    Returns False, leaving `dest` as it was, when `src` is missing or differs: the hash is
    taken over the very bytes written, so a source changed mid-copy is never placed.
    """
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symlink put there by someone: not our file
            return False
        raise
    with os.fdopen(fd, "rb") as inp:
        try:
            with atomic_output(dest) as out:
                digest = hashlib.sha256()
                while block := inp.read(COPY_BUFFER):
                    digest.update(block)
                    out.write(block)
                if digest.hexdigest() != sha256:
                    raise _Mismatch
        except _Mismatch:
            return False
    return True


def _link_into_place(src: Path, dest: Path) -> bool:
    tmp = temp_path_for(dest)
    try:
        if not stat.S_ISREG(os.lstat(src).st_mode):
            return False
        os.link(src, tmp, follow_symlinks=False)
    except OSError:  # EXDEV, EPERM (some filesystems forbid links): fall back to a copy
        return False
    with _into_place(tmp, dest):
        # The link shares src's data blocks: they must be on disk before dest appears.
        fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return True


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps_pretty(obj: Any) -> bytes:
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=_json_default)
    return (text + "\n").encode("utf-8")


def atomic_write_json(dest: Path, obj: Any) -> None:
    """Write `obj` as pretty JSON (sorted keys, trailing newline), atomically."""
    atomic_write_file(dest, data=dumps_pretty(obj))


def cleanup_temp_files(
    directory: Path, *, min_age_s: float = 0.0, clock: Clock = SYSTEM_CLOCK,
    own_tag: str | None = None,
) -> int:
    """Remove `.tmp-*` files a crash left in `directory` (not recursive); return how many.

    Call at startup, before any writer of this process runs; `min_age_s` spares temp files
    younger than that, except those tagged `own_tag` (this host's: their writer is dead).
    """
    removed = 0
    now = clock.now().timestamp()
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if not entry.name.startswith(TEMP_PREFIX):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                continue
            if now - st.st_mtime < min_age_s and not (own_tag and _tagged(entry.name, own_tag)):
                continue
            Path(entry.path).unlink()
        except FileNotFoundError:
            continue
        removed += 1
        log.debug("outbox.temp_file_removed", file=entry.name, folder=directory.name)
    if removed:
        fsync_dir(directory)
    return removed


def _split_name(name: str) -> tuple[str, str]:
    suffix = PurePath(name).suffix
    if not suffix or len(suffix) > 16:  # "a.verylongnotasuffix" is all stem
        return name, ""
    return name[: -len(suffix)], suffix


def candidate_names(name: str, *, reserve_bytes: int = 0) -> Iterator[str]:
    """`a.txt`, `a (2).txt`, `a (3).txt`, ... each short enough to leave `reserve_bytes`."""
    stem, suffix = _split_name(name)
    limit = NAME_MAX_BYTES - reserve_bytes
    n = 1
    while True:
        marker = "" if n == 1 else f" ({n})"
        room = limit - len(os.fsencode(marker + suffix))
        if room <= 0:
            raise ValueError(f"no room for a file name with reserve {reserve_bytes}")
        yield truncate_name(stem, room) + marker + suffix
        n += 1


def copy_beside(src: Path, folder: Path, prefix: str, *, like: os.stat_result | None = None,
                ) -> Path:
    """A durable copy of `src` in `folder` under a fresh dotfile name starting with `prefix`
    (the inbox ignores dotfiles), for the caller to link or rename into place. With `like`,
    the copy takes that file's timestamps and its mode without setuid/setgid/sticky bits;
    without, a new file's mode (0666 less the umask)."""
    tmp = folder / f"{prefix}{secrets.token_hex(6)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                 0o600 if like is not None else 0o666)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, COPY_BUFFER)
            out.flush()
            if like is not None:
                os.fchmod(out.fileno(), copy_mode(like.st_mode))
                os.utime(out.fileno(), ns=(like.st_atime_ns, like.st_mtime_ns))
            os.fsync(out.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp
