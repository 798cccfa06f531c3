"""`retry-hooks [RUN]`: run failed hook and webhook runs again (all of them, or one by id).

Each failed run goes back to `pending`, due now, with its attempts counted from 0 and the
same idempotency key (a hook that already did part of its work can recognise it). A running
daemon's hook worker looks for due runs every second; a stopped one runs them at its next
start. Nothing failed (or no such failed run): exit 1 with why.
"""

from __future__ import annotations

import argparse
from typing import Any

import anyio

from orchestrator.cli.common import (
    AdminError,
    Outcome,
    daemon_note,
    layout_from_args,
    open_store,
    plural,
    run_admin,
)
from orchestrator.core.hooks import RunState
from orchestrator.layout import Layout


async def _retry_hooks(layout: Layout, run_id: int | None) -> Outcome:
    async with open_store(layout) as store:
        if run_id is not None:
            found = await store.get_hook_run(run_id)
            if found is None:
                raise AdminError(f"no hook run {run_id} (see `status`)")
            if found.state is not RunState.FAILED:
                raise AdminError(f"hook run {run_id} is {found.state}, not failed: nothing "
                                 "to retry", detail={"run_id": run_id, "state": str(found.state)})
        rearmed = await store.retry_hook_runs(run_id)
    if not rearmed:
        raise AdminError("no failed hook runs: nothing to retry")
    pid, note = daemon_note(layout)
    result: dict[str, Any] = {"retried": rearmed, "daemon_pid": pid}
    return result, (f"{plural(len(rearmed), 'hook run')} due again "
                    f"({', '.join(f'#{i}' for i in rearmed)}); {note}")


def retry_hooks_command(args: argparse.Namespace) -> int:
    return run_admin(args, lambda a: anyio.run(_retry_hooks, layout_from_args(a), a.run))
