"""`requeue --all [--reason CODE] [--since T]`: every rejected file back into the inbox, each
through `requeue FILE`'s safe single-file path (link or copy+fsync, then drop the record).

Only entries with our `<file>.error.json` are candidates (a bare file in rejected/ is not
ours to judge). `--reason` matches the record's reason code, `--since` its `rejected_at`
(a record without one never matches `--since`). A file that cannot be requeued is reported
and the rest go on; the exit code is then 1.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from functools import partial
from typing import Any

import anyio

from orchestrator.cli.common import (
    AdminError,
    Outcome,
    daemon_note,
    has_state,
    layout_from_args,
    plural,
)
from orchestrator.cli.requeue import Requeued, record_requeues, requeue_file
from orchestrator.core.model import JobType
from orchestrator.errors import ExitCode
from orchestrator.files.inbox import printable
from orchestrator.files.rejected import ERROR_SUFFIX, read_record
from orchestrator.layout import Layout


def since_arg(text: str) -> datetime:
    """An RFC 3339 time (`2026-12-02T04:50:00Z`); without an offset, UTC."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _matches(record: dict[str, Any], reason: str | None, since: datetime | None) -> bool:
    if reason is not None and record.get("reason") != reason:
        return False
    if since is not None:
        try:
            rejected_at = since_arg(str(record["rejected_at"]))
        except (KeyError, ValueError):
            return False
        return rejected_at >= since
    return True


def candidates(layout: Layout, reason: str | None, since: datetime | None) -> list[str]:
    """Names in outbox/rejected/ with our record that match, in name order."""
    try:
        names = sorted(p.name for p in layout.rejected.iterdir())
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        if name.endswith(ERROR_SUFFIX) or name.startswith("."):
            continue
        record = read_record(layout.rejected / f"{name}{ERROR_SUFFIX}")
        if record is not None and record.get("file") == name and _matches(record, reason, since):
            found.append(name)
    return found


def requeue_all(args: argparse.Namespace) -> Outcome:
    layout = layout_from_args(args)
    job_type = JobType(args.type) if args.type else None
    done: list[Requeued] = []
    failed: list[dict[str, Any]] = []
    for name in candidates(layout, args.reason, args.since):
        try:
            done.append(requeue_file(layout, name, job_type))
        except AdminError as error:
            failed.append({"file": name, "error": error.message})
    warnings = []
    if done and has_state(layout):
        try:
            anyio.run(partial(record_requeues, layout, done, "operator.requeue", all=True))
        except Exception as error:  # the moves are done; the history line is a nicety
            warnings.append(f"not noted in the event log: {type(error).__name__}: {error}")
    pid, when = daemon_note(layout)
    result = {"requeued": [item.public() for item in done], "failed": failed,
              "daemon_pid": pid, "warnings": warnings,
              "filter": {"reason": args.reason,
                         "since": args.since.isoformat() if args.since else None}}
    lines = [f"requeued {plural(len(done), 'file')}" + (f"; {when}" if done else "")]
    lines += [f"  {printable(i.name)} -> {printable(str(i.dest))} ({i.job_type})" for i in done]
    lines += [f"  FAILED {printable(f['file'])}: {printable(f['error'])}" for f in failed]
    lines += [f"  warning: {w}" for w in warnings]
    if failed:
        raise AdminError(
            f"{plural(len(failed), 'file')} could not be requeued ({len(done)} requeued): "
            + "; ".join(f"{printable(f['file'])}: {printable(f['error'])}" for f in failed),
            ExitCode.FAILURE, detail=result)
    return result, "\n".join(lines)
