"""The file side of claiming an inbox file: move it into the spool (a rename, or a durable
copy across filesystems), tell whether it changed while or after it was read, and recognise
the original a crashed cross-filesystem claim copied. The database side is daemon/intake.py.
"""

from __future__ import annotations

import errno
import filecmp
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.core.model import InputFile
from orchestrator.errors import InputRejected
from orchestrator.files.atomic import atomic_output, fsync_dir
from orchestrator.files.idfile import IdFileReport, normalise_id_file


class Replaced(Exception):
    """The inbox name now holds another file than the one found stable."""


class Unclaimable(Exception):
    """Copied across filesystems, but the original cannot be removed from the inbox (the
    daemon may not write that folder): claiming it would process it again on every scan."""


class StillWritten(Exception):
    """A claimed file changed while (or since) it was read: its producer is still writing."""


def read_and_normalise(
    src: Path, dest: Path, *, normalise: Callable[..., IdFileReport] = normalise_id_file,
    **options: Any,
) -> tuple[os.stat_result, IdFileReport | InputRejected | UnicodeError, os.stat_result]:
    """The spooled file's stat before and after validating it (`normalise`), and the
    verdict. A verdict is only good if the file did not change meanwhile (the caller checks).

    The file is fsynced meanwhile, in a second thread: a well-formed file is its own upload
    body (no copy is written), so it must be on disk before it is queued, and the writeback
    of what its producer left in the page cache overlaps the read instead of following it."""
    before = src.stat()
    outcome: IdFileReport | InputRejected | UnicodeError
    syncing = _Fsync(src)
    try:
        outcome = normalise(src, dest, **options)
    except (InputRejected, UnicodeError) as refused:
        outcome = refused
    finally:
        syncing.join()
    return before, outcome, src.stat()


class _Fsync(threading.Thread):
    """fsync a regular file in the background; join() re-raises what it failed with."""

    def __init__(self, path: Path) -> None:
        super().__init__(name="fsync", daemon=True)
        self.path = path
        self.error: OSError | None = None
        self.start()

    def run(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return  # not ours to report: validation opens it too and says why
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                os.fsync(fd)
        except OSError as error:
            self.error = error
        finally:
            os.close(fd)

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        if self.error is not None:
            raise self.error


def still_changing(item: InputFile, before: os.stat_result, after: os.stat_result,
                    bytes_read: int | None, settle_s: float, now: float) -> str | None:
    """Why the validation just done does not count (None: it does)."""
    if (before.st_size, before.st_mtime_ns, before.st_ctime_ns) != (
            after.st_size, after.st_mtime_ns, after.st_ctime_ns):
        return f"changed while it was read ({before.st_size} -> {after.st_size} bytes)"
    if bytes_read is not None and bytes_read != after.st_size:
        return f"{bytes_read} bytes read, {after.st_size} bytes long"
    if before.st_size != item.size_bytes or (
            item.mtime_ns is not None and before.st_mtime_ns != item.mtime_ns):
        return (f"{item.size_bytes} bytes when claimed (or last seen), {before.st_size} bytes "
                "now")
    if 0 <= now - after.st_mtime_ns / 1e9 < settle_s:
        return f"modified {now - after.st_mtime_ns / 1e9:.1f}s ago"
    return None


def is_the_copied_file(item: InputFile, original: Path, original_stat: os.stat_result,
                        spooled: Path, spooled_stat: os.stat_result) -> bool:
    """Is the inbox file the one a crashed cross-filesystem claim copied? Inode numbers are
    reused, so inode and size alone could delete a new file: the times recorded at the claim
    and the content must match too (a same-content file loses nothing when removed)."""
    if spooled_stat.st_ino == item.inode and spooled_stat.st_dev == original_stat.st_dev:
        return False  # the spooled file is the original itself (a rename)
    if not stat.S_ISREG(original_stat.st_mode) or original_stat.st_ino != item.inode:
        return False
    if original_stat.st_size != item.size_bytes or original_stat.st_size != spooled_stat.st_size:
        return False
    if item.mtime_ns is not None and original_stat.st_mtime_ns != item.mtime_ns:
        return False
    if item.ctime_ns is not None and original_stat.st_ctime_ns != item.ctime_ns:
        return False
    try:
        return filecmp.cmp(original, spooled, shallow=False)
    except OSError:
        return False


def move_into_spool(source: Path, target: Path, inode: int) -> None:
    # A producer may have renamed another file over the name since the scan: claim only
    # the file that was seen stable (the new one gets its own quiet period).
    if os.lstat(source).st_ino != inode:
        raise Replaced
    try:
        source.rename(target)
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
        copy_into_spool(source, target, inode)
    fsync_dir(target.parent)

def copy_into_spool(source: Path, target: Path, inode: int) -> None:
    """Inbox and spool on different filesystems: copy durably, then remove the original,
    but only if the name still holds the file we copied, unchanged.

    A producer still writing through an open file (no `.part` rename) would go on writing
    into the removed original, out of sight: a file that changed during the copy is left in
    the inbox (Replaced) for another quiet period. Put the spool on the inbox's filesystem
    (`paths.spool_dir`) so that a claim is a rename and later writes stay visible.
    """
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as inp:
        st = os.fstat(inp.fileno())
        if st.st_ino != inode or not stat.S_ISREG(st.st_mode):
            raise Replaced
        with atomic_output(target) as out:
            copied = 0
            while block := inp.read(1 << 20):
                out.write(block)
                copied += len(block)
            if _changed(st, os.fstat(inp.fileno())) or copied != st.st_size:
                raise Replaced  # inside atomic_output: the copy is discarded
            # The claim-time mtime, so validation can tell the copy from a changed file.
            out.flush()
            os.utime(out.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))
        # fsync + rename of gigabytes take seconds: what was appended meanwhile would go with
        # the original. Look at the open file once more, right before removing it.
        if _changed(st, os.fstat(inp.fileno())):
            target.unlink(missing_ok=True)
            fsync_dir(target.parent)
            raise Replaced
        try:
            if os.lstat(source).st_ino == inode:
                source.unlink()
                fsync_dir(source.parent)
        except FileNotFoundError:
            pass
        except OSError as error:
            target.unlink(missing_ok=True)
            raise Unclaimable(error) from None


def _changed(before: os.stat_result, after: os.stat_result) -> bool:
    return (before.st_size, before.st_mtime_ns, before.st_ctime_ns) != (
        after.st_size, after.st_mtime_ns, after.st_ctime_ns)
