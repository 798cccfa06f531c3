"""Outbox retention (`[retention] outbox_days`): delete delivered results past their age.

A delivery is known by its manifest, `<stem>.manifest.json`, written last (the commit point);
its age is the manifest's mtime. For each manifest older than the cut-off the delivery's files
go: `<stem>.jsonl`, `<stem>.delta.jsonl`, `<stem>.compliant.jsonl`, then the manifest itself,
so a crash half-way leaves the manifest and the next pass finishes. Only the type folders are
read (never `rejected/`), nothing but those four names of a stem with a manifest is removed,
and a file that is not a regular file (or is already gone) is skipped.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST = ".manifest.json"
# Removed before the manifest, in this order.
DELIVERY_SUFFIXES = (".jsonl", ".delta.jsonl", ".compliant.jsonl")


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


def prune_deliveries(manifests: list[Path]) -> OutboxPruned:
    """Remove each manifest's delivery (its files, then the manifest)."""
    pruned = OutboxPruned()
    for manifest in manifests:
        stem = manifest.name[: -len(MANIFEST)]
        kept = [s for s in DELIVERY_SUFFIXES
                if not _remove_regular(manifest.with_name(stem + s), pruned)]
        if kept:
            continue  # the manifest stays, so the next pass tries again
        before = pruned.files
        if _remove_regular(manifest, pruned) and pruned.files > before:
            pruned.deliveries += 1
    return pruned
