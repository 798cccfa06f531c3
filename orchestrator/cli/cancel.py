"""`cancel BATCH [--force]`: stop a batch; its inputs go to outbox/rejected/ (nothing is lost).

Order, as in intake: the database first (core.operator.cancel's Decision through
`Store.apply`, one transaction: compare-and-set of the batch state to `cancelled`, its inputs
`rejected` with their error record, the events),
then the files. If we die in between, the daemon's rejection pass (at start and every rescan)
moves the files with the record we stored. A daemon holding the batch in memory finds out on
its next transition: the store's compare-and-set fails (StaleState), the runner logs
`batch.stale` and moves on to other work.

X has no endpoint to cancel a compliance job: once a remote job exists, cancelling only stops
us from tracking it, so that needs `--force` and says so.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

import anyio

from orchestrator.cli.common import (
    AdminError,
    Outcome,
    config_hint,
    daemon_note,
    hook_targets_from_args,
    layout_from_args,
    open_store,
    plural,
    run_admin,
)
from orchestrator.clock import iso
from orchestrator.core import operator
from orchestrator.core.model import Batch, BatchState, InputFile
from orchestrator.core.operator import CANCEL_CODE, CANCEL_REASON, REMOTE_STATES
from orchestrator.files.rejected import reject_file
from orchestrator.layout import Layout
from orchestrator.store.sqlite import StaleState


def _remote_clause(batch: Batch) -> str:
    if batch.x_job_id:
        return f"remote job {batch.x_job_id}"
    return f"a remote job named {batch.x_job_name} (its creation request may have been sent)"


def _refusal(batch: Batch) -> AdminError:
    detail = {"batch_id": batch.id, "state": str(batch.state), "x_job_id": batch.x_job_id}
    if batch.state is BatchState.DELIVERING:
        return AdminError(
            f"batch {batch.id} is delivering: its results are being written to the outbox "
            "right now and it finishes by itself; it cannot be cancelled", detail=detail)
    if batch.state is BatchState.FAILED:
        return AdminError(f"batch {batch.id} has already failed; its inputs are in "
                          "outbox/rejected/ (`retry` sends them round again)", detail=detail)
    if batch.state.is_final:
        return AdminError(f"batch {batch.id} is already {batch.state}; nothing to cancel",
                          detail=detail)
    return AdminError(
        f"batch {batch.id} ({batch.job_type}) is {batch.state}: {_remote_clause(batch)} "
        "exists at X, and X has no endpoint to cancel it. Cancelling stops tracking it: it "
        "keeps running until it completes or expires, and its results will not be "
        "downloaded. Add --force to cancel anyway (the inputs go to outbox/rejected/).",
        detail=detail)


def _error_document(
    item: InputFile, batch: Batch, forced: bool, x_job_ids: list[str], now: Any
) -> dict[str, Any]:
    # The same shape as intake's records (file, job_type, input_id, ...), so `requeue`
    # finds the job type and the daemon's rejection pass can finish the move.
    document: dict[str, Any] = {
        "file": item.name, "job_type": str(item.job_type), "input_id": item.id,
        "claimed_at": iso(item.claimed_at), "stage": str(batch.state), "reason": CANCEL_CODE,
        "message": f"{item.name}: {CANCEL_REASON} (batch {batch.id} was {batch.state})",
        "batch_id": batch.id, "attempts": batch.attempt, "x_job_ids": x_job_ids,
        "cancelled_at": iso(now),
    }
    if forced:
        document["remote_job_left_running"] = batch.x_job_id or batch.x_job_name
    return document


def _move_files(
    layout: Layout, batch: Batch, inputs: list[InputFile], documents: dict[int, dict[str, Any]]
) -> tuple[list[dict[str, str]], list[str]]:
    placed, warnings = [], []
    for item in inputs:
        (layout.spool / item.copy_name).unlink(missing_ok=True)
        try:
            try:
                dest = reject_file(layout.spool / item.spool_name, layout.rejected, item.name,
                                   documents[item.id])
            except FileNotFoundError:
                # The daemon's rejection pass may have moved it in the same instant: then
                # this finds the finished rejection (else it raises again).
                dest = reject_file(layout.spool / item.spool_name, layout.rejected,
                                   item.name, documents[item.id])
        except OSError as error:
            # The row says `rejected`: the daemon's rejection pass retries the move.
            warnings.append(f"{item.name} is still in the spool ({error}); the daemon moves "
                            "it to outbox/rejected/ on its next pass")
            continue
        placed.append({"file": item.name, "rejected_as": dest.name, "path": str(dest)})
    # Work files of the batch; a daemon still busy with it may leave its own behind.
    for path in (*layout.batch_files(batch.id).all, layout.spool / batch.upload_name):
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
    return placed, warnings


async def _cancel(layout: Layout, args: argparse.Namespace) -> Outcome:
    async with open_store(layout, hook_targets=hook_targets_from_args(args)) as store:
        batch = await store.get_batch(args.batch)
        if batch is None:
            raise AdminError(f"no batch {args.batch} (list them with `jobs`)")
        remote = batch.state in REMOTE_STATES
        inputs = list({p.input.id: p.input for p in await store.batch_parts(batch.id)}.values())
        decision = operator.cancel(batch, force=args.force, files=[i.name for i in inputs])
        if decision is None:
            raise _refusal(batch)
        shared = await store.open_batches_sharing(batch.id, [i.id for i in inputs])
        if shared:
            raise AdminError(f"batch {batch.id} shares inputs with unfinished batch(es) "
                             f"{', '.join(map(str, shared))}; cancel those first")
        x_job_ids = [row["x_job_id"] for row in await store.remote_jobs_of(batch.id)]
        now = store.clock.now()
        documents = {i.id: _error_document(i, batch, remote, x_job_ids, now) for i in inputs}
        try:
            # The batch, its remote job's history row and its inputs (rejected, with these
            # records) in one transaction, like any transition of the daemon's.
            await store.apply(batch, decision, input_errors=documents)
        except StaleState:
            fresh = await store.get_batch(batch.id)
            state = fresh.state if fresh else "gone"
            raise AdminError(f"batch {batch.id} changed while we looked (it is {state} now); "
                             "nothing done: look again with `jobs`") from None
    placed, warnings = _move_files(layout, batch, inputs, documents)
    return _report(layout, args, batch, remote, placed, warnings)


def _report(
    layout: Layout, args: argparse.Namespace, batch: Batch, forced: bool,
    placed: list[dict[str, str]], warnings: list[str],
) -> Outcome:
    pid, _when = daemon_note(layout)
    result: dict[str, Any] = {
        "batch_id": batch.id, "job_type": str(batch.job_type), "from_state": str(batch.state),
        "state": "cancelled", "forced": forced, "rejected": placed, "warnings": warnings,
        "daemon_pid": pid, "remote_job": None,
    }
    lines = [f"batch {batch.id} ({batch.job_type}) cancelled (it was {batch.state})."]
    if forced:
        note = (f"X has no cancel endpoint: {_remote_clause(batch)} keeps running until it "
                "completes or expires, and its results will not be downloaded. Until it "
                "ends, X's one-job rule may hold back the next job (the daemon waits).")
        result["remote_job"] = {"x_job_id": batch.x_job_id, "name": batch.x_job_name,
                                "note": note}
        lines.append(note)
    if placed:
        lines.append(f"{plural(len(placed), 'input')} moved to {layout.rejected}/:")
        lines += [f"  {p['rejected_as']}" for p in placed]
        first = placed[0]["rejected_as"]
        lines.append(f"bring one back with: compliance-orchestrator requeue '{first}' "
                     f"{config_hint(args)}")
    lines += [f"warning: {w}" for w in warnings]
    return result, "\n".join(lines)


def _cancel_sync(args: argparse.Namespace) -> Outcome:
    layout = layout_from_args(args)
    return anyio.run(_cancel, layout, args)


def cancel_command(args: argparse.Namespace) -> int:
    return run_admin(args, _cancel_sync)
