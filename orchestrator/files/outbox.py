"""Crash-safe file placement: temp file + fsync + rename, and the rejected-input folder.

Every writer here assumes kill -9 at any line: a reader sees either the old state or the
complete new file, never a partial one. Temp files are named `.tmp-<name>-<random>` in the
destination folder (a rename is atomic only within one filesystem, and dotfiles are ignored by
the inbox) and are swept by `cleanup_temp_files` at startup.
"""

from __future__ import annotations

import contextlib
import errno
import filecmp
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePath
from typing import Any, BinaryIO

import structlog

from orchestrator.core.model import format_timestamp
from orchestrator.redact import redact_text

log = structlog.get_logger(__name__)

TEMP_PREFIX = ".tmp-"
ERROR_SUFFIX = ".error.json"
NAME_MAX_BYTES = 255  # NAME_MAX on Linux filesystems
COPY_BUFFER = 1024 * 1024
_MAX_ERROR_JSON_BYTES = 1024 * 1024  # ours are tiny; a bigger file is a user's input


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


def _truncate_name(name: str, max_bytes: int) -> str:
    raw = os.fsencode(name)
    if len(raw) <= max_bytes:
        return name
    # Cut on a UTF-8 character boundary so the shortened name stays readable.
    cut = raw[:max_bytes].decode("utf-8", errors="ignore")
    return cut or os.fsdecode(raw[:max_bytes])


def truncate_name(name: str, max_bytes: int) -> str:
    """`name` cut (on a UTF-8 character boundary) to at most `max_bytes` bytes."""
    return _truncate_name(name, max_bytes)


def temp_path_for(dest: Path) -> Path:
    """A fresh temp name beside `dest` (same filesystem, so the final rename is atomic)."""
    stem = _truncate_name(dest.name, NAME_MAX_BYTES - len(TEMP_PREFIX) - 9)
    return dest.with_name(f"{TEMP_PREFIX}{stem}-{secrets.token_hex(4)}")


@contextlib.contextmanager
def atomic_output(dest: Path) -> Iterator[BinaryIO]:
    """Yield a binary file that becomes `dest` (fsynced) only if the block ends without error."""
    tmp = temp_path_for(dest)
    # 0o666 & ~umask, like any new file; mkstemp's 0600 would hide results from readers.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "wb", buffering=COPY_BUFFER) as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
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


class _Mismatch(Exception):
    """The bytes copied are not the ones expected (raised inside atomic_output to discard)."""


def file_sha256(path: Path) -> str:
    """sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(COPY_BUFFER):
            digest.update(block)
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
    try:
        # The link shares src's data blocks: they must be on disk before dest appears.
        fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(dest.parent)
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


def cleanup_temp_files(directory: Path, *, min_age_s: float = 0.0) -> int:
    """Remove `.tmp-*` files a crash left in `directory` (not recursive); return how many.

    Call at startup, before any writer runs; `min_age_s` spares temp files younger than that.
    """
    removed = 0
    now = datetime.now(UTC).timestamp()
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if not entry.name.startswith(TEMP_PREFIX):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode) or now - st.st_mtime < min_age_s:
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
        yield _truncate_name(stem, room) + marker + suffix
        n += 1


def _default_taken(directory: Path) -> Callable[[str], bool]:
    def taken(candidate: str) -> bool:
        return os.path.lexists(directory / candidate) or os.path.lexists(
            directory / (candidate + ERROR_SUFFIX)
        )

    return taken


def unique_name(
    directory: Path,
    name: str,
    taken: Callable[[str], bool] | None = None,
    *,
    reserve_bytes: int = 0,
    max_tries: int = 100_000,
) -> str:
    """First of `name`, `name (2)`, ... that `taken` says is free.

    The default `taken` counts a name as used if it or `<name>.error.json` exists. Names are
    shortened (keeping the suffix) so that `reserve_bytes` more fit within NAME_MAX.
    """
    is_taken = taken or _default_taken(directory)
    for tries, candidate in enumerate(candidate_names(name, reserve_bytes=reserve_bytes)):
        if tries >= max_tries:
            break
        if not is_taken(candidate):
            return candidate
    raise FileExistsError(errno.EEXIST, f"no free name like {name!r} in {directory.name}/")


# --- rejected inputs ---------------------------------------------------------------------


def safe_basename(name: str) -> str:
    """A plain file name from whatever the caller has (never a path, never a temp name)."""
    cleaned = name.replace("/", "_").replace("\x00", "_").strip()
    if cleaned in ("", ".", ".."):
        cleaned = "unnamed"
    if cleaned.startswith(TEMP_PREFIX):  # cleanup_temp_files would delete it
        cleaned = "_" + cleaned
    return cleaned


def _our_error_json(path: Path, candidate: str) -> bool:
    """True if `path` is an error record we wrote for `candidate` (not a user's file)."""
    try:
        if os.lstat(path).st_size > _MAX_ERROR_JSON_BYTES:
            return False
        with open(path, "rb") as f:
            record = json.loads(f.read())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("file") == candidate


def _scrub(value: Any, replacements: list[tuple[re.Pattern[str], str]]) -> Any:
    """Take local paths and secrets out of an error record (recursively)."""
    if isinstance(value, str):
        for pattern, new in replacements:
            value = pattern.sub(lambda _m, new=new: new, value)
        return redact_text(value)
    if isinstance(value, dict):
        return {str(k): _scrub(v, replacements) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v, replacements) for v in value]
    return value


def _kind(mode: int) -> str:
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


def _rejections(rejected_dir: Path, name: str) -> Iterator[Path]:
    """Completed rejections under `name`, `name (2)`, ... (a file plus our error record)."""
    for candidate in candidate_names(name, reserve_bytes=len(ERROR_SUFFIX)):
        path = rejected_dir / candidate
        record = rejected_dir / (candidate + ERROR_SUFFIX)
        if not (os.path.lexists(path) or os.path.lexists(record)):
            return
        if os.path.lexists(path) and _our_error_json(record, candidate):
            yield path


def _copy_across(src: Path, st: os.stat_result, dest: Path) -> None:
    """Copy a regular file or a symlink to another filesystem, atomically at `dest`."""
    if stat.S_ISLNK(st.st_mode):
        tmp = temp_path_for(dest)
        tmp.symlink_to(src.readlink())
        try:
            tmp.replace(dest)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return
    with atomic_output(dest) as out:
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as inp:
            shutil.copyfileobj(inp, out, COPY_BUFFER)
        out.flush()
        # Keep the producer's mode and timestamps on the "untouched" input.
        os.fchmod(out.fileno(), stat.S_IMODE(st.st_mode))
        os.utime(out.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))


def reject_file(src: Path, rejected_dir: Path, name: str, error: dict[str, Any]) -> Path:
    """Move `src` untouched to `rejected_dir/<name>` beside `<name>.error.json`; return its path.

    Order: the error record is written (atomically) first, then the entry is moved, so a crash
    leaves at worst an orphan record that the retry reuses, never a lost input. A retry after
    the move finished (`src` gone) returns the existing rejection. Taken names get ` (2)`...
    Symlinks are moved as links, directories/fifos with rename; those cannot cross filesystems
    (OSError EXDEV: leave the entry and tell the operator).
    """
    name = safe_basename(name)
    rejected_dir.mkdir(parents=True, exist_ok=True)
    try:
        st = os.lstat(src)
    except FileNotFoundError:
        done = list(_rejections(rejected_dir, name))
        if done:  # the move of an earlier attempt completed
            return done[-1]
        raise FileNotFoundError(
            errno.ENOENT, f"cannot reject {name!r}: it is gone and not in {rejected_dir.name}/"
        ) from None

    same_fs = st.st_dev == rejected_dir.stat().st_dev
    if not same_fs:
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            raise OSError(
                errno.EXDEV,
                f"cannot move {_kind(st.st_mode)} {name!r} to {rejected_dir.name}/ on another "
                "filesystem; it was left where it is",
            )
        if stat.S_ISREG(st.st_mode):
            # A crash after the copy but before unlinking src: finish that attempt.
            for done in _rejections(rejected_dir, name):
                if _same_content(src, done):
                    src.unlink()
                    fsync_dir(src.parent)
                    return done

    def taken(candidate: str) -> bool:
        # An orphan record of ours (crash before the move) is reused, not skipped.
        record = rejected_dir / (candidate + ERROR_SUFFIX)
        return os.path.lexists(rejected_dir / candidate) or (
            os.path.lexists(record) and not _our_error_json(record, candidate)
        )

    final = unique_name(rejected_dir, name, taken, reserve_bytes=len(ERROR_SUFFIX))
    # The spool's own name for the file (and its folder) mean nothing to the operator.
    replacements = [
        (re.compile(rf"(?<![\w.-]){re.escape(old)}(?![\w.-])"), new)
        for old, new in ((str(src), name), (str(src.parent), src.parent.name), (src.name, name))
    ]
    record = _scrub(dict(error), replacements)
    record["file"] = final
    if final != name:
        record["original_name"] = name
    record.setdefault("rejected_at", format_timestamp(datetime.now(UTC)))
    if not stat.S_ISREG(st.st_mode):
        record.setdefault("entry_kind", _kind(st.st_mode))
    atomic_write_json(rejected_dir / (final + ERROR_SUFFIX), record)

    dest = rejected_dir / final
    if same_fs:
        src.rename(dest)  # never follows a symlink; moves dirs and fifos as they are
        fsync_dir(rejected_dir)
    else:
        _copy_across(src, st, dest)
        fsync_dir(rejected_dir)
        src.unlink()
    fsync_dir(src.parent)
    log.debug("outbox.rejected_placed", file=final, kind=_kind(st.st_mode))
    return dest


def _same_content(a: Path, b: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(b).st_mode) and filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False
