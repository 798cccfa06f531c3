"""Outbox retention (`[retention] outbox_days`): delete delivered results past their age.

A delivery is known by its manifest, `<stem>.manifest.json`, written last (the commit point);
its age is the manifest's mtime. For each manifest older than the cut-off the files it names
go (`output`, `delta`, `compliant_copy`: never a file guessed from the stem, which may be
another delivery's, e.g. the results of an input called `a.delta.csv`), then the manifest
itself, so a crash half-way leaves the manifest and the next pass finishes. Only the type
folders are read (never `rejected/`), a manifest that cannot be read is left alone (and
reported), and a file that is not a regular file (or is already gone) is skipped.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST = ".manifest.json"
# The manifest's keys that name a file of the delivery, removed before it in this order.
DELIVERY_KEYS = ("output", "delta", "compliant_copy")


@dataclass(slots=True)
class OutboxPruned:
    deliveries: int = 0  # manifests removed
    files: int = 0  # every file removed, manifests included
    errors: list[tuple[str, str]] = field(default_factory=list)  # (name, strerror)


def _remove_regular(path: Path, pruned: OutboxPruned) -> bool:
    """Unlink `path` if it is a regular file; False only when it is there and could not go."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return True
        path.unlink()
    except FileNotFoundError:
        return True
    except OSError as error:
        pruned.errors.append((path.name, error.strerror or type(error).__name__))
        return False
    pruned.files += 1
    return True


def old_manifests(folder: Path, older_than_ts: float, limit: int) -> list[Path]:
    """Up to `limit` manifests in `folder` last modified before `older_than_ts` (Unix time)."""
    found: list[Path] = []
    try:
        entries = os.scandir(folder)
    except FileNotFoundError:
        return found
    with entries:
        for entry in entries:
            if not entry.name.endswith(MANIFEST) or entry.name.startswith("."):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(info.st_mode) and info.st_mtime < older_than_ts:
                found.append(Path(entry.path))
                if len(found) >= limit:
                    break
    return found


def delivery_files(manifest: Path) -> list[str] | None:
    """The names of the files `manifest` delivered beside it; None when it cannot be read."""
    try:
        document = json.loads(manifest.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict):
        return None
    names = []
    for key in DELIVERY_KEYS:
        entry = document.get(key)
        name = entry.get("file") if isinstance(entry, dict) else None
        # A plain name in this folder only: a manifest never names anything else.
        if isinstance(name, str) and name and "/" not in name and not name.startswith("."):
            names.append(name)
    return names


def prune_deliveries(manifests: list[Path]) -> OutboxPruned:
    """Remove each manifest's delivery (the files it names, then the manifest)."""
    pruned = OutboxPruned()
    for manifest in manifests:
        names = delivery_files(manifest)
        if names is None:
            pruned.errors.append((manifest.name, "manifest unreadable: left as it is"))
            continue
        kept = [name for name in names
                if not _remove_regular(manifest.with_name(name), pruned)]
        if kept:
            continue  # the manifest stays, so the next pass tries again
        before = pruned.files
        if _remove_regular(manifest, pruned) and pruned.files > before:
            pruned.deliveries += 1
    return pruned
