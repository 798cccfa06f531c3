"""`requeue FILE`: put a rejected input back into the inbox; the daemon claims it anew.

The file moves from `outbox/rejected/` into `inbox/<type>/` without ever appearing there
partially written or over another file: on one filesystem it is hard-linked under the first
free name (a link never replaces an existing name) and then unlinked from `rejected/`; across
filesystems it is first copied to a `.requeue-*` dotfile in the type folder (the inbox
ignores dotfiles), fsynced, and linked into place the same way. Only then is its
`<file>.error.json` removed. A crash in between leaves the file in both places (never in
none); the next `requeue` of it sees that (same inode, or a copy with the same size, mtime
and bytes in the inbox or the spool) and only finishes the removal. A stale `.requeue-*`
copy is swept by the next requeue.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import filecmp
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from orchestrator.cli.common import (
    AdminError,
    Outcome,
    config_hint,
    daemon_note,
    has_state,
    layout_from_args,
    open_store,
    run_admin,
)
from orchestrator.clock import SYSTEM_CLOCK, Clock
from orchestrator.core.model import JobType
from orchestrator.errors import ExitCode
from orchestrator.files.atomic import candidate_names, copy_beside, fsync_dir
from orchestrator.files.inbox import is_ignored_name, printable
from orchestrator.files.rejected import ERROR_SUFFIX, read_record
from orchestrator.layout import Layout
from orchestrator.redact import redact_text
from orchestrator.store.sqlite import EventNote

TEMP_PREFIX = ".requeue-"
_STALE_TEMP_S = 3600.0
_MAX_NAME_TRIES = 10_000
# Errors that mean "this filesystem (pair) cannot hard-link": fall back, don't fail.
_NO_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK})
_RECORD_FIELDS = ("reason", "stage", "message")


@dataclass(frozen=True, slots=True)
class Requeued:
    name: str             # the file's name in outbox/rejected/
    source: Path
    dest: Path            # where it is now, in inbox/<type>/
    job_type: JobType
    record: dict[str, Any] | None  # the error record that was removed

    def public(self) -> dict[str, Any]:
        previous = {k: redact_text(str(self.record[k])) for k in _RECORD_FIELDS
                    if self.record and self.record.get(k) is not None}
        return {"file": self.name, "from": str(self.source), "to": str(self.dest),
                "job_type": str(self.job_type), "previous_error": previous}


def resolve_rejected(layout: Layout, file: str) -> Path:
    """FILE as a name in outbox/rejected/ or a path to one; its error record is accepted too."""
    rejected = layout.rejected
    given = Path(file)
    if len(given.parts) > 1 or given.is_absolute():
        parent = given.parent.resolve()
        if parent != rejected.resolve():
            raise AdminError(f"{file}: FILE must be in {rejected}/ (or just its name there)",
                             ExitCode.USAGE)
    name = given.name
    if name.endswith(ERROR_SUFFIX) and os.path.lexists(rejected / name[: -len(ERROR_SUFFIX)]):
        name = name[: -len(ERROR_SUFFIX)]
    if not name or name in (".", ".."):
        raise AdminError(f"{file!r} is not a file name", ExitCode.USAGE)
    return rejected / name


def _link_first_free(src: Path, folder: Path, wanted: str) -> Path | None:
    """Hard-link `src` as the first free `wanted`, `wanted (2)`, ...; None if links can't be."""
    for tries, candidate in enumerate(candidate_names(wanted)):
        if tries >= _MAX_NAME_TRIES:
            break
        dest = folder / candidate
        try:
            os.link(src, dest, follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError as error:
            if error.errno in _NO_LINK:
                return None
            raise
        return dest
    raise AdminError(f"no free name like {wanted!r} in {folder}")


def _rename_first_free(src: Path, folder: Path, wanted: str) -> Path:
    # Only where hard links are impossible: a producer creating the very same name in the
    # instant between the check and the rename could be replaced.
    for tries, candidate in enumerate(candidate_names(wanted)):
        if tries >= _MAX_NAME_TRIES:
            break
        dest = folder / candidate
        if not os.path.lexists(dest):
            src.rename(dest)
            return dest
    raise AdminError(f"no free name like {wanted!r} in {folder}")


def _copy_beside(src: Path, st: os.stat_result, folder: Path) -> Path:
    """A durable copy of `src` in `folder` under a dotfile name the inbox ignores. It keeps
    the producer's timestamps, not its setuid/setgid bits: root makes this copy, and such a
    bit on it would hand root's rights to whoever owns the file."""
    return copy_beside(src, folder, TEMP_PREFIX, like=st)


def _sweep_stale_temps(folder: Path, clock: Clock) -> None:
    now = clock.now().timestamp()
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if entry.name.startswith(TEMP_PREFIX):
                with contextlib.suppress(OSError):
                    if now - entry.stat(follow_symlinks=False).st_mtime > _STALE_TEMP_S:
                        Path(entry.path).unlink()


def _already_requeued(src: Path, st: os.stat_result, folders: list[Path]) -> Path | None:
    """Where an interrupted requeue already put `src`: a second name of the same inode (a
    hard link, one filesystem), or across filesystems a copy with the same size, mtime (the
    copy keeps it) and content, in the inbox folder or already claimed into the spool."""
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(TEMP_PREFIX):
                continue
            try:
                other = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISREG(other.st_mode):
                continue
            if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                return Path(entry.path) if st.st_nlink > 1 else None
            if (other.st_dev != st.st_dev and other.st_size == st.st_size
                    and other.st_mtime_ns == st.st_mtime_ns
                    and _same_bytes(src, Path(entry.path))):
                return Path(entry.path)
    return None


def _same_bytes(a: Path, b: Path) -> bool:
    try:
        return filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def move_into(
    src: Path, st: os.stat_result, folder: Path, wanted: str, *, clock: Clock = SYSTEM_CLOCK
) -> Path:
    """Move the regular file `src` into `folder` under a free name near `wanted`; atomic."""
    folder.mkdir(parents=True, exist_ok=True)
    _sweep_stale_temps(folder, clock)
    staged = src if st.st_dev == folder.stat().st_dev else _copy_beside(src, st, folder)
    dest = _link_first_free(staged, folder, wanted)
    if dest is None:
        dest = _rename_first_free(staged, folder, wanted)
    else:
        staged.unlink()
    fsync_dir(folder)
    if staged is not src:
        src.unlink()
    fsync_dir(src.parent)
    return dest


def requeue_file(
    layout: Layout, file: str, job_type: JobType | None = None, *, clock: Clock = SYSTEM_CLOCK
) -> Requeued:
    """Move a rejected file back into the inbox and drop its error record.

    The job type comes from `job_type`, else from the record's `job_type`. AdminError: the
    file is not there (1), is no regular file (1), or its type is unknown (2).
    """
    src = resolve_rejected(layout, file)
    name = src.name
    try:
        st = os.lstat(src)
    except FileNotFoundError:
        raise AdminError(f"{name}: no such file in {layout.rejected}/") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        raise AdminError(f"{name} is {kind}; only regular ID files can go back to the inbox")
    record_path = src.with_name(name + ERROR_SUFFIX)
    record = read_record(record_path)
    recorded = (record or {}).get("job_type")
    if job_type is None:
        if recorded not in {t.value for t in JobType}:
            raise AdminError(
                f"{name}: its error record does not say which IDs it holds; "
                "add --type tweets or --type users", ExitCode.USAGE,
            )
        job_type = JobType(recorded)
    wanted = str((record or {}).get("original_name") or name)
    if is_ignored_name(wanted) or "/" in wanted:
        wanted = name
    if is_ignored_name(wanted):
        raise AdminError(f"{name}: the inbox ignores names like this; rename it first")
    folder = layout.inbox_for(job_type)
    dest = _already_requeued(src, st, [folder, layout.spool])
    if dest is not None:
        # An earlier requeue died between placing the file and removing it from rejected/:
        # finish that one instead of making another copy.
        src.unlink()
        fsync_dir(src.parent)
    else:
        dest = move_into(src, st, folder, wanted, clock=clock)
    with contextlib.suppress(FileNotFoundError):
        record_path.unlink()
        fsync_dir(record_path.parent)
    return Requeued(name, src, dest, job_type, record)


async def record_requeues(layout: Layout, items: list[Requeued], kind: str, **detail: Any) -> None:
    """Note the requeue in the event log (history only: nothing depends on it)."""
    notes = []
    for item in items:
        input_id = (item.record or {}).get("input_id")
        notes.append(EventNote(kind, input_id=input_id if isinstance(input_id, int) else None,
                               detail={**detail, **item.public()}))
    async with open_store(layout) as store:
        await store.record_events(notes)


def _requeue(args: argparse.Namespace) -> Outcome:
    layout = layout_from_args(args)
    job_type = JobType(args.type) if args.type else None
    item = requeue_file(layout, args.file, job_type)
    warnings = []
    if has_state(layout):
        try:
            anyio.run(record_requeues, layout, [item], "operator.requeue")
        except Exception as error:  # the move is done; the history line is a nicety
            warnings.append(f"not noted in the event log: {type(error).__name__}: {error}")
    pid, when = daemon_note(layout)
    result = {**item.public(), "daemon_pid": pid, "warnings": warnings}
    lines = [f"requeued {printable(item.name)} -> {printable(item.dest)} ({item.job_type});"
             f" {when}"]
    reason = result["previous_error"].get("message") or result["previous_error"].get("reason")
    if reason:
        lines.append(f"  it had been rejected: {printable(reason)}")
    recorded = (item.record or {}).get("job_type")
    if recorded and recorded != str(item.job_type):
        lines.append(f"  note: its record said {printable(recorded)}; --type {item.job_type}"
                     " was used")
    lines.extend(f"  warning: {w}" for w in warnings)
    lines.append(f"  follow it with: compliance-orchestrator status {config_hint(args)}")
    return result, "\n".join(lines)


def _usage(args: argparse.Namespace) -> Outcome:
    raise AdminError("give either FILE or --all (--reason and --since go with --all)",
                     ExitCode.USAGE)


def requeue_command(args: argparse.Namespace) -> int:
    if bool(args.all) == bool(args.file) or (not args.all and (args.reason or args.since)):
        return run_admin(args, _usage)
    if args.all:
        from orchestrator.cli.requeue_all import requeue_all

        return run_admin(args, requeue_all)
    return run_admin(args, _requeue)
