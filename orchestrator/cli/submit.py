"""`submit FILE --type tweets|users [--dataset NAME]`: hand a file to the inbox safely.

The copy is written under a dotfile name in the inbox folder itself (the daemon ignores
dotfiles), fsynced, then hard-linked to its final name, which fails instead of replacing a
file already waiting there, and the temp name is removed: the daemon sees the whole file or
nothing. With `--dataset NAME` the name is `NAME@<UTC time><suffix>` (core/datasets.py), so
each delivery is compared with the dataset's previous one; a `-2`, `-3`... is added when that
name waits in the inbox or was delivered already (two submits within a second). Needs no
state database and no running daemon; the inbox must already exist and be writable (it is
never created here: a misspelt path would otherwise swallow files nobody watches).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
from pathlib import Path
from typing import Any

from orchestrator.cli.common import EXIT_FAILURE, EXIT_USAGE, AdminError, Outcome, run_admin
from orchestrator.clock import SystemClock
from orchestrator.config import load_config
from orchestrator.core.datasets import NAME_RULE, dataset_file_name, valid_dataset_name
from orchestrator.core.model import JobType
from orchestrator.files.atomic import copy_beside, fsync_dir
from orchestrator.files.inbox import is_ignored_name
from orchestrator.layout import Layout

MAX_NAME_TRIES = 100
TEMP_PREFIX = ".submit-"


def _source(path: Path) -> os.stat_result:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise AdminError(f"{path}: no such file", EXIT_USAGE) from None
    except PermissionError:
        raise AdminError(f"{path}: not readable (permission denied)", EXIT_USAGE) from None
    if not stat.S_ISREG(st.st_mode):
        raise AdminError(f"{path}: not a regular file", EXIT_USAGE)
    return st


def _inbox_folder(layout: Layout, job_type: JobType) -> Path:
    folder = layout.inbox_for(job_type)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise AdminError(
            f"the inbox folder {folder} {what}: check [paths] inbox in the config",
            EXIT_FAILURE,
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise AdminError(f"the inbox folder {folder} is not writable by this user "
                         f"(uid {os.getuid()})", EXIT_FAILURE)
    return folder


def _outbox_has(outbox: Path | None, name: str) -> bool:
    """A delivery under this stem exists already: the daemon would deliver as `stem-2`."""
    if outbox is None:
        return False
    stem = Path(name).stem
    return any((outbox / f"{stem}{suffix}").exists()
               for suffix in (".jsonl", ".manifest.json"))


def submit(src: Path, folder: Path, dataset: str | None, outbox: Path | None = None) -> Path:
    """Copy `src` into `folder` under its final name; return that path. A dataset's name
    also avoids stems already delivered to `outbox`, so it names its own results."""
    now = SystemClock().now()
    suffix = "".join(src.suffixes[-1:])
    first = dataset_file_name(dataset, now, suffix) if dataset else src.name
    tmp = copy_beside(src, folder, TEMP_PREFIX)
    try:
        for attempt in range(MAX_NAME_TRIES if dataset else 1):
            name = dataset_file_name(dataset, now, suffix, attempt) if dataset else first
            target = folder / name
            if dataset and _outbox_has(outbox, name):
                continue
            try:
                os.link(tmp, target)  # never replaces: EEXIST instead
            except FileExistsError:
                continue
            fsync_dir(folder)
            return target
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    raise AdminError(
        f"{folder / first} already exists and is waiting to be claimed: rename your file, "
        f"or wait for the daemon to claim the other one", EXIT_FAILURE,
    )


def _submit(args: argparse.Namespace) -> Outcome:
    config = load_config(args.config)
    layout = Layout.from_config(config)
    src: Path = args.file
    st = _source(src)
    dataset: str | None = args.dataset
    if dataset is not None and not valid_dataset_name(dataset):
        raise AdminError(f"--dataset {dataset!r}: expected {NAME_RULE}", EXIT_USAGE)
    if dataset is None and is_ignored_name(src.name):
        raise AdminError(f"{src.name}: the daemon ignores this name (a dotfile, *.part or "
                         f"*.tmp); rename the file first", EXIT_USAGE)
    folder = _inbox_folder(layout, JobType(args.type))
    target = submit(src, folder, dataset, layout.outbox_for(JobType(args.type)))
    result: dict[str, Any] = {"path": str(target), "name": target.name, "bytes": st.st_size,
                              "type": args.type, "dataset": dataset}
    shown = f" (dataset {dataset})" if dataset else ""
    return result, (f"submitted {src} as {target}{shown}, {st.st_size} bytes: the daemon "
                    f"claims it at its next scan; `status --files` lists it until then")


def submit_command(args: argparse.Namespace) -> int:
    return run_admin(args, _submit)
