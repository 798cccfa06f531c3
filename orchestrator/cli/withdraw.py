"""`withdraw NAME [--type T]`: take a queued file (claimed, not yet in a batch) out of the
queue; it goes to outbox/rejected/ with reason `withdrawn` (`requeue` brings it back).

Order, as in `cancel`: the database first (QUEUED -> REJECTED through the store's guarded
move, with its error record and event, in one transaction; core.inputs decides whether the
input may go), then the file. If the daemon formed a batch from it meanwhile, the guarded move
fails and nothing is done. If we die between the two, the daemon's rejection pass moves the
file with the record we stored. A file already in a batch is refused: `cancel BATCH`.
"""

from __future__ import annotations

import argparse
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
    run_admin,
)
from orchestrator.clock import rfc3339
from orchestrator.core.inputs import WITHDRAW_REASON, withdraw_refusal
from orchestrator.core.model import InputFile, InputState, JobType
from orchestrator.errors import ExitCode
from orchestrator.files.inbox import printable
from orchestrator.files.rejected import reject_file
from orchestrator.layout import Layout
from orchestrator.store.sqlite import StaleState, Store

_UNFINISHED = (InputState.CLAIMED, InputState.QUEUED, InputState.BATCHED)


async def _find(store: Store, name: str, job_type: JobType | None) -> InputFile:
    found = [i for i in await store.inputs_in(_UNFINISHED)
             if i.name == name and (job_type is None or i.job_type is job_type)]
    if not found:
        raise AdminError(f"no queued file named {printable(name)!s}"
                         + (f" of type {job_type}" if job_type else "")
                         + " (list them with `status --files`)")
    types = sorted({str(i.job_type) for i in found})
    if len(types) > 1:
        raise AdminError(f"{printable(name)} is queued as {' and '.join(types)}: "
                         "say which with --type", ExitCode.USAGE)
    return found[0]


async def _withdraw(layout: Layout, args: argparse.Namespace) -> Outcome:
    job_type = JobType(args.type) if args.type else None
    async with open_store(layout, hook_targets=hook_targets_from_args(args)) as store:
        item = await _find(store, args.name, job_type)
        open_batches = sorted({
            row["batch_id"] for row in await store.parts_of_input(item.id)
            if row["state"] != "done"
        })
        refusal = withdraw_refusal(printable(item.name), item.state,
                                   await store.covered_ids(item.id), open_batches)
        if refusal:
            raise AdminError(refusal, detail={"input_id": item.id, "state": str(item.state),
                                              "batch_ids": open_batches})
        now = store.clock.now()
        document: dict[str, Any] = {
            "file": item.name, "job_type": str(item.job_type), "input_id": item.id,
            "stage": "queue", "reason": WITHDRAW_REASON,
            "message": f"{item.name}: withdrawn from the queue by operator",
            "claimed_at": rfc3339(item.claimed_at), "withdrawn_at": rfc3339(now),
        }
        try:
            await store.move_input(item.id, [InputState.QUEUED], InputState.REJECTED,
                                   event="operator.withdraw", detail={"file": item.name},
                                   error_json=document)
        except StaleState:
            raise AdminError(f"{printable(item.name)} changed while we looked (the daemon may "
                             "have put it into a batch); nothing done: look again with "
                             "`status --files`") from None
    warnings = []
    (layout.spool / item.copy_name).unlink(missing_ok=True)
    try:
        dest = reject_file(layout.spool / item.spool_name, layout.rejected, item.name, document)
    except OSError as error:
        warnings.append(f"still in the spool ({error}); the daemon moves it to "
                        "outbox/rejected/ on its next pass")
        dest = None
    pid, _when = daemon_note(layout)
    result = {"file": item.name, "job_type": str(item.job_type), "input_id": item.id,
              "reason": WITHDRAW_REASON, "rejected_as": dest.name if dest else None,
              "path": str(dest) if dest else None, "warnings": warnings, "daemon_pid": pid}
    lines = [f"withdrew {printable(item.name)} ({item.job_type})"
             + (f" -> {printable(str(dest))}" if dest else "")]
    lines += [f"warning: {w}" for w in warnings]
    if dest:
        lines.append(f"bring it back with: compliance-orchestrator requeue "
                     f"'{printable(dest.name)}' {config_hint(args)}")
    return result, "\n".join(lines)


def withdraw_command(args: argparse.Namespace) -> int:
    return run_admin(args, lambda a: anyio.run(_withdraw, layout_from_args(a), a))
