"""`retry BATCH`: try a waiting batch now, or send a failed batch's inputs round again.

A batch whose next step waits (`next_attempt_at` in the future: backing off after errors, or
paused after an authentication error) gets that wait cleared and its stage counters reset:
core.operator.clear_wait's Decision through `Store.apply`, a compare-and-set on (state,
next_attempt_at) with an `operator.retry` event in the same transaction. The daemon sleeps
at most a few seconds at a time and re-reads the database, so it tries the batch almost at
once. A `failed` batch's inputs are back in the inbox afterwards
(they were in outbox/rejected/), where the daemon claims them like new files.
"""

from __future__ import annotations

import argparse
import os
import stat
from datetime import datetime
from pathlib import Path, PurePath
from typing import Any

import anyio

from orchestrator.cli.common import (
    AdminError,
    Outcome,
    config_hint,
    daemon_note,
    layout_from_args,
    open_store,
    run_admin,
    short_time,
)
from orchestrator.cli.requeue import Requeued, requeue_file
from orchestrator.clock import iso
from orchestrator.core import operator
from orchestrator.core.decision import Decision
from orchestrator.core.model import Batch, BatchState, InputFile, InputState
from orchestrator.files.atomic import file_sha256
from orchestrator.files.rejected import ERROR_SUFFIX, read_record, safe_basename
from orchestrator.layout import Layout
from orchestrator.redact import redact_text
from orchestrator.store.sqlite import EventNote, StaleState, Store


def find_rejected(layout: Layout, item: InputFile) -> Path | None:
    """The file in outbox/rejected/ that holds this input (`x.txt`, `x (2).txt`, ...).

    Proof of identity: the record's `input_id`, else the same size and SHA-256 as when the
    input was claimed (records of failed batches do not carry the input id).
    """
    wanted = safe_basename(item.name)
    prefix = PurePath(wanted).stem[:32]
    try:
        entries = [e.name for e in os.scandir(layout.rejected)]
    except FileNotFoundError:
        return None
    for record_name in sorted(entries):
        if not (record_name.startswith(prefix) and record_name.endswith(ERROR_SUFFIX)):
            continue
        record = read_record(layout.rejected / record_name)
        if not record or (record.get("original_name") or record.get("file")) != wanted:
            continue
        path = layout.rejected / str(record.get("file"))
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode) or path.parent != layout.rejected:
            continue
        if "input_id" in record:
            if record["input_id"] == item.id:
                return path
            continue
        if (item.input_sha256 and st.st_size == item.size_bytes
                and file_sha256(path) == item.input_sha256):
            return path
    return None


def _why_waiting(batch: Batch) -> str:
    due = short_time(batch.next_attempt_at)
    error = redact_text(batch.last_error) if batch.last_error else None
    if error and error.startswith("AuthError"):
        return (f"paused until {due} after an authentication error ({error}); if the token "
                "is not fixed yet, it pauses again")
    if error and (batch.stage_retries or batch.stage_waits):
        return f"backing off until {due} after {error}"
    if batch.state is BatchState.QUEUED and batch.attempt:
        after = f" (the last one: {error})" if error else ""
        return f"waiting until {due} before creating remote job #{batch.attempt + 1}{after}"
    if batch.state is BatchState.WAITING:
        return f"next poll of remote job {batch.x_job_id} scheduled for {due}"
    return f"next step scheduled for {due}"


async def _clear_wait(store: Store, layout: Layout, batch: Batch, decision: Decision) -> Outcome:
    assert batch.next_attempt_at is not None
    try:
        await store.apply(batch, decision)
    except StaleState:
        fresh = await store.get_batch(batch.id)
        state = fresh.state if fresh else "gone"
        raise AdminError(f"batch {batch.id} changed while we looked (it is {state} now); "
                         "nothing done: look again with `jobs`") from None
    pid, when = daemon_note(layout)
    why = _why_waiting(batch)
    result = {"batch_id": batch.id, "job_type": str(batch.job_type), "state": str(batch.state),
              "action": "retry_now", "was_due_at": iso(batch.next_attempt_at),
              "last_error": redact_text(batch.last_error) if batch.last_error else None,
              "daemon_pid": pid}
    text = (f"batch {batch.id} ({batch.job_type}, {batch.state}, attempt {batch.attempt}): "
            f"{why}.\nCleared: {when}.")
    return result, text


async def _requeue_failed(
    store: Store, layout: Layout, batch: Batch, args: argparse.Namespace
) -> Outcome:
    parts = await store.batch_parts(batch.id)
    inputs = list({part.input.id: part.input for part in parts}.values())
    found: list[tuple[InputFile, Path]] = []
    problems: list[str] = []
    for item in inputs:
        if item.state is not InputState.REJECTED:
            problems.append(f"{item.name} is {item.state}, not rejected")
        elif (layout.spool / item.spool_name).exists():
            problems.append(f"{item.name} is not in outbox/rejected/ yet (the daemon moves it "
                            "there when it can); run retry again after that")
        elif (path := find_rejected(layout, item)) is None:
            problems.append(f"{item.name} is no longer in outbox/rejected/ (requeued already?)")
        else:
            found.append((item, path))
    reason = redact_text(batch.last_error) if batch.last_error else "see its error records"
    if not found:
        raise AdminError(f"batch {batch.id} failed ({reason}); nothing to requeue: "
                         + "; ".join(problems), detail={"batch_id": batch.id})
    note = EventNote("operator.retry", batch_id=batch.id, from_state=str(BatchState.FAILED),
                     to_state=str(BatchState.FAILED),
                     detail={"action": "requeue", "files": [path.name for _item, path in found]})
    try:  # failed is final, so this guard is cheap insurance
        await store.record_events([note], batch_in=(batch.id, BatchState.FAILED))
    except StaleState:
        raise AdminError(f"batch {batch.id} is no longer failed; nothing done") from None
    done: list[Requeued] = []
    for item, path in found:
        try:
            done.append(requeue_file(layout, str(path), item.job_type))
        except (AdminError, OSError) as error:
            problems.append(f"{item.name}: {error}")
    pid, when = daemon_note(layout)
    requeued = [r.public() for r in done]
    if problems and not done:
        raise AdminError("; ".join(problems), detail={"batch_id": batch.id})
    result: dict[str, Any] = {"batch_id": batch.id, "job_type": str(batch.job_type),
                              "state": "failed", "action": "requeue", "requeued": requeued,
                              "problems": problems, "daemon_pid": pid}
    lines = [f"batch {batch.id} ({batch.job_type}) had failed: {reason}",
             f"requeued {len(done)} of {len(inputs)} input(s); {when}:"]
    lines += [f"  {r.name} -> {r.dest}" for r in done]
    lines += [f"  not requeued: {p}" for p in problems]
    lines.append(f"follow them with: compliance-orchestrator status {config_hint(args)}")
    if problems:
        raise AdminError("\n".join(lines), detail=result)
    return result, "\n".join(lines)


def _nothing_to_do(batch: Batch, now: datetime) -> AdminError:
    state = batch.state
    if state is BatchState.DONE:
        why = "it is done; its results are in the outbox"
    elif state is BatchState.CANCELLED:
        why = ("it was cancelled; its inputs are in outbox/rejected/: bring one back with "
               "`requeue FILE`")
    else:
        why = (f"it is {state} and not waiting: its next step is due now, so the daemon is "
               "on it (see `status`)")
        if batch.next_attempt_at is not None and batch.next_attempt_at <= now:
            why += f" (it was due at {short_time(batch.next_attempt_at)})"
    return AdminError(f"batch {batch.id}: nothing to retry: {why}",
                      detail={"batch_id": batch.id, "state": str(state)})


async def _retry(layout: Layout, args: argparse.Namespace) -> Outcome:
    async with open_store(layout) as store:
        batch = await store.get_batch(args.batch)
        if batch is None:
            raise AdminError(f"no batch {args.batch} (list them with `jobs`)")
        now = store.clock.now()
        if batch.state is BatchState.FAILED:
            return await _requeue_failed(store, layout, batch, args)
        last_error = redact_text(batch.last_error or "") or None
        decision = operator.clear_wait(batch, now, last_error=last_error)
        if decision is not None:
            return await _clear_wait(store, layout, batch, decision)
        raise _nothing_to_do(batch, now)


def _retry_sync(args: argparse.Namespace) -> Outcome:
    layout = layout_from_args(args)
    return anyio.run(_retry, layout, args)


def retry_command(args: argparse.Namespace) -> int:
    return run_admin(args, _retry_sync)
