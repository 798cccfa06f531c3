"""The rejected-input folder: inputs moved untouched to outbox/rejected/ beside an error record.

Each rejected entry `<name>` has `<name>.error.json` (ours: its "file" names the entry). The
record is written before the entry is moved, so a crash leaves at worst an orphan record that
the retry reuses, never a lost input.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from orchestrator.clock import SYSTEM_CLOCK, Clock, rfc3339
from orchestrator.files.atomic import (
    COPY_BUFFER,
    DEFAULT_MIN_FREE_BYTES,
    TEMP_PREFIX,
    atomic_output,
    atomic_write_json,
    candidate_names,
    copy_mode,
    ensure_room,
    fsync_dir,
    temp_path_for,
)
from orchestrator.files.inbox import entry_kind
from orchestrator.redact import redact_text

log = structlog.get_logger(__name__)

ERROR_SUFFIX = ".error.json"
_MAX_ERROR_JSON_BYTES = 1024 * 1024  # ours are tiny; a bigger file is a user's input


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



def _one_time_format(record: dict[str, Any]) -> dict[str, Any]:
    """Every top-level `*_at` timestamp in the one format people see (clock.rfc3339: RFC 3339
    UTC with `Z`), whichever producer wrote it; anything unparseable stays as it is."""
    for key, value in record.items():
        if key.endswith("_at") and isinstance(value, str | datetime):
            with contextlib.suppress(ValueError):
                record[key] = rfc3339(value)
    return record


def safe_basename(name: str) -> str:
    """A plain file name from whatever the caller has (never a path, never a temp name)."""
    cleaned = name.replace("/", "_").replace("\x00", "_").strip()
    if cleaned in ("", ".", ".."):
        cleaned = "unnamed"
    if cleaned.startswith(TEMP_PREFIX):  # cleanup_temp_files would delete it
        cleaned = "_" + cleaned
    return cleaned


def read_small_regular(path: Path, limit: int = _MAX_ERROR_JSON_BYTES) -> bytes | None:
    """The bytes of `path` if it is a regular file of at most `limit` bytes, else None.

    Never follows a symlink and never blocks: a producer may have dropped a FIFO, a device
    or a link to /dev/zero under a name we read (`a.error.json`), and open()+read() on that
    would hang a worker thread (under the reject lock, before READY=1) or read forever.
    """
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        # Swapped for something else between the lstat and the open: still not ours.
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = b""
        while len(data) <= limit and (block := os.read(fd, limit + 1 - len(data))):
            data += block
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if len(data) <= limit else None


def read_record(path: Path) -> dict[str, Any] | None:
    """The `<file>.error.json` beside a rejected file, if it is a (small, regular) JSON object."""
    data = read_small_regular(path)
    if data is None:
        return None
    try:
        record = json.loads(data)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _our_error_json(path: Path, candidate: str) -> bool:
    """True if `path` is an error record we wrote for `candidate` (not a user's file)."""
    record = read_record(path)
    return record is not None and record.get("file") == candidate


def _literal(text: str) -> Callable[[re.Match[str]], str]:
    """A re.sub replacement taken as it is (no backslash or group expansion)."""
    return lambda _match: text


def _scrub(value: Any, replacements: list[tuple[re.Pattern[str], str]]) -> Any:
    """Take local paths and secrets out of an error record (recursively)."""
    if isinstance(value, str):
        for pattern, new in replacements:
            value = pattern.sub(_literal(new), value)
        return redact_text(value)
    if isinstance(value, dict):
        return {str(k): _scrub(v, replacements) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v, replacements) for v in value]
    return value


def _rejections(rejected_dir: Path, name: str) -> Iterator[Path]:
    """Completed rejections under `name`, `name (2)`, ... (a file plus our error record)."""
    for candidate in candidate_names(name, reserve_bytes=len(ERROR_SUFFIX)):
        path = rejected_dir / candidate
        record = rejected_dir / (candidate + ERROR_SUFFIX)
        if not (os.path.lexists(path) or os.path.lexists(record)):
            return
        if os.path.lexists(path) and _our_error_json(record, candidate):
            yield path


class SourceChanged(OSError):
    """The entry changed, or another took its name, while it was copied to another
    filesystem: it stays where it is, the copy goes, and the next rescan looks again."""

    def __init__(self, name: str) -> None:
        super().__init__(errno.EAGAIN, f"{name!r} changed while it was copied to rejected/; "
                                       "left where it is, tried again")


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _unchanged(path: Path, st: os.stat_result) -> bool:
    """Does `path` still hold the file `st` describes, unchanged? (Asked before unlinking
    it: a producer may have renamed a corrected file over the name meanwhile.)"""
    try:
        return _identity(os.lstat(path)) == _identity(st)
    except FileNotFoundError:
        return False


def _open_regular(path: Path, st: os.stat_result | None = None) -> int:
    """An fd on the regular file at `path` (the one `st` describes, if given). Never blocks
    and never follows a link: a FIFO swapped in after the lstat would hang the thread."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or (
                st is not None and (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino)):
            raise SourceChanged(path.name)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _copy_across(src: Path, st: os.stat_result, dest: Path, min_free: int) -> None:
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
    ensure_room(dest.parent, st.st_size, min_free)  # NoRoom: nothing written, retried later
    with atomic_output(dest) as out:
        fd = _open_regular(src, st)
        with os.fdopen(fd, "rb") as inp:
            shutil.copyfileobj(inp, out, COPY_BUFFER)
        out.flush()
        # Keep the producer's timestamps on the "untouched" input, but not its mode: a copy
        # is a new file of ours (written as root by `cancel`), never setuid/setgid/sticky.
        os.fchmod(out.fileno(), copy_mode(st.st_mode))
        os.utime(out.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))


def reject_file(
    src: Path, rejected_dir: Path, name: str, error: dict[str, Any], *,
    clock: Clock = SYSTEM_CLOCK, min_free: int = DEFAULT_MIN_FREE_BYTES,
) -> Path:
    """Move `src` untouched to `rejected_dir/<name>` beside `<name>.error.json`; return its path.

    Order: the error record is written (atomically) first, then the entry is moved, so a crash
    leaves at worst an orphan record that the retry reuses, never a lost input. A retry after
    the move finished (`src` gone) returns the existing rejection. Taken names get ` (2)`...
    Symlinks are moved as links, directories/fifos with rename; those cannot cross filesystems
    (OSError EXDEV: leave the entry and tell the operator). A copy that would leave less
    than `min_free` bytes free is not started (NoRoom, an OSError ENOSPC).
    """
    name = safe_basename(name)
    rejected_dir.mkdir(parents=True, exist_ok=True)
    try:
        st = os.lstat(src)
    except FileNotFoundError:
        finished = list(_rejections(rejected_dir, name))
        if finished:  # the move of an earlier attempt completed
            return finished[-1]
        raise FileNotFoundError(
            errno.ENOENT, f"cannot reject {name!r}: it is gone and not in {rejected_dir.name}/"
        ) from None

    same_fs = st.st_dev == rejected_dir.stat().st_dev
    if not same_fs:
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            raise OSError(
                errno.EXDEV,
                f"cannot move {entry_kind(st.st_mode)} {name!r} to {rejected_dir.name}/ on another "
                "filesystem; it was left where it is",
            )
        if stat.S_ISREG(st.st_mode):
            # A crash after the copy but before unlinking src: finish that attempt.
            for done in _rejections(rejected_dir, name):
                if _same_content(src, st, done):
                    if not _unchanged(src, st):
                        raise SourceChanged(name)
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
    record.setdefault("rejected_at", clock.now())
    record = _one_time_format(record)
    if not stat.S_ISREG(st.st_mode):
        record.setdefault("entry_kind", entry_kind(st.st_mode))
    atomic_write_json(rejected_dir / (final + ERROR_SUFFIX), record)

    dest = rejected_dir / final
    if same_fs:
        src.rename(dest)  # never follows a symlink; moves dirs and fifos as they are
        fsync_dir(rejected_dir)
    else:
        try:
            _copy_across(src, st, dest, min_free)
            if not _unchanged(src, st):  # after a copy of minutes: still the file copied?
                raise SourceChanged(name)
        except SourceChanged:
            # Keep src (it may be a new file, never copied); drop what describes it here.
            dest.unlink(missing_ok=True)
            (rejected_dir / (final + ERROR_SUFFIX)).unlink(missing_ok=True)
            fsync_dir(rejected_dir)
            raise
        fsync_dir(rejected_dir)
        src.unlink()
    fsync_dir(src.parent)
    log.debug("outbox.rejected_placed", file=final, kind=entry_kind(st.st_mode))
    return dest


def _same_content(src: Path, st: os.stat_result, done: Path) -> bool:
    """Is `done` (a finished rejection) a copy of the file `st` describes at `src`? Both are
    opened without blocking or following links, like every read of a producer's entry."""
    try:
        with os.fdopen(_open_regular(src, st), "rb") as a, \
                os.fdopen(_open_regular(done), "rb") as b:
            if os.fstat(a.fileno()).st_size != os.fstat(b.fileno()).st_size:
                return False
            while True:
                block = a.read(COPY_BUFFER)
                if block != b.read(COPY_BUFFER):
                    return False
                if not block:
                    return True
    except OSError:
        return False


def error_record_of(rejected_dir: Path, name: str, input_id: int) -> Path | None:
    """The `<name>.error.json` of input `input_id`'s completed rejection, if there is one."""
    for path in _rejections(rejected_dir, safe_basename(name)):
        record = path.with_name(path.name + ERROR_SUFFIX)
        found = read_record(record)
        if found is not None and found.get("input_id") == input_id:
            return record
    return None
