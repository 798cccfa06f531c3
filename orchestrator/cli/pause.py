"""`pause [--reason R]` / `resume`: hold new remote work for maintenance, across restarts.

The pause is a row in the state database (core.operator.pause's SettingChange through
`Store.change_setting`, with an `operator.pause` event), so it survives a daemon restart. While
paused the daemon's lanes start no new remote job (no QUEUED -> CREATING, no new batch formed)
but finish what is in flight; claiming new inbox files continues. A running daemon notices
within its re-read interval (a few seconds). Pausing twice keeps the first pause (exit 0).
"""

from __future__ import annotations

import argparse
from typing import Any

import anyio

from orchestrator.cli.common import (
    Outcome,
    daemon_note,
    layout_from_args,
    open_store,
    run_admin,
)
from orchestrator.clock import SystemClock
from orchestrator.core import operator
from orchestrator.layout import Layout


async def _pause(layout: Layout, reason: str | None) -> Outcome:
    async with open_store(layout) as store:
        current = await store.setting(operator.PAUSE_KEY)
        change = operator.pause(current, SystemClock().now(), by="operator", reason=reason)
        if change is not None:
            await store.change_setting(change)
        state = await store.setting(operator.PAUSE_KEY)
    assert state is not None
    pid, note = daemon_note(layout)
    already = change is None
    result: dict[str, Any] = {"paused": True, "already": already, "daemon_pid": pid, **state}
    text = (f"already paused since {state['since']} by {state['by']}" if already else
            f"paused since {state['since']}: no new remote jobs start until `resume` "
            f"(jobs in flight finish; new inbox files are still claimed); {note}")
    return result, text


async def _resume(layout: Layout) -> Outcome:
    async with open_store(layout) as store:
        current = await store.setting(operator.PAUSE_KEY)
        change = operator.resume(current)
        if change is not None:
            await store.change_setting(change)
    pid, note = daemon_note(layout)
    if change is None:
        return {"paused": False, "already": True, "daemon_pid": pid}, "not paused; nothing to do"
    assert current is not None
    return ({"paused": False, "already": False, "daemon_pid": pid,
             "paused_since": current.get("since")},
            f"resumed (paused since {current.get('since')}): queued files go on; {note}")


def pause_command(args: argparse.Namespace) -> int:
    return run_admin(args, lambda a: anyio.run(_pause, layout_from_args(a), a.reason))


def resume_command(args: argparse.Namespace) -> int:
    return run_admin(args, lambda a: anyio.run(_resume, layout_from_args(a)))
