"""Hook and webhook runs in the state database: intent rows written inside the transaction
that moves an input to delivered or rejected, then claimed, finished or retried by the hook
worker (daemon/hooks.py), re-armed by `retry-hooks`. States: core.hooks.RunState."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiosqlite

from orchestrator.clock import Clock, from_iso, iso
from orchestrator.core.hooks import HookTarget, RunState, concerned, idempotency_key
from orchestrator.core.model import InputState
from orchestrator.store.lease import FencedWrites


@dataclass(frozen=True, slots=True)
class HookRun:
    id: int
    kind: str
    target: str
    event: str
    input_id: int | None
    batch_id: int | None
    key: str
    state: RunState
    attempts: int
    max_attempts: int
    next_at: datetime | None
    detail: dict[str, Any]
    last_error: str | None
    created_at: datetime | None
    finished_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "target": self.target, "event": self.event,
                "input_id": self.input_id, "batch_id": self.batch_id,
                "idempotency_key": self.key, "state": str(self.state),
                "attempts": self.attempts, "max_attempts": self.max_attempts,
                "next_at": iso(self.next_at), "last_error": self.last_error,
                "created_at": iso(self.created_at), "finished_at": iso(self.finished_at)}


def _run(row: aiosqlite.Row) -> HookRun:
    return HookRun(
        id=row["id"], kind=row["kind"], target=row["target"], event=row["event"],
        input_id=row["input_id"], batch_id=row["batch_id"], key=row["idempotency_key"],
        state=RunState(row["state"]), attempts=row["attempts"],
        max_attempts=row["max_attempts"], next_at=from_iso(row["next_at"]),
        detail=json.loads(row["detail_json"]) if row["detail_json"] else {},
        last_error=row["last_error"], created_at=from_iso(row["created_at"]),
        finished_at=from_iso(row["finished_at"]),
    )


class HookRunStore(FencedWrites):
    """The hook and webhook runs of store.sqlite.Store (SQL both engines accept)."""

    clock: Clock
    hook_targets: tuple[HookTarget, ...] = ()  # set by the daemon from [[hooks]]/[[webhooks]]


    async def _insert_runs(self, targets: list[HookTarget], event: str, input_id: int | None,
                           batch_id: int | None, key: str,
                           detail: Mapping[str, Any] | None = None) -> None:
        now = iso(self.clock.now())
        for target in targets:
            await self.conn.execute(
                "INSERT INTO hook_runs (kind, target, event, input_id, batch_id,"
                " idempotency_key, state, max_attempts, next_at, detail_json, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (target, idempotency_key) DO NOTHING",
                (target.kind, target.target, event, input_id, batch_id, key,
                 str(RunState.PENDING), target.max_attempts, now,
                 json.dumps(dict(detail), sort_keys=True) if detail else None, now, now),
            )

    async def _hook_intents(self, input_id: int, to_state: InputState,
                            batch_id: int | None) -> None:
        """Called inside the transaction of an input's move: the runs its event concerns."""
        event = {InputState.DELIVERED: "delivered", InputState.REJECTED: "rejected"}.get(
            to_state)
        if event is None or not self.hook_targets:
            return
        row = await self._fetch_one(
            "SELECT i.job_type, b.key FROM inputs i LEFT JOIN batches b ON b.id = ?"
            " WHERE i.id = ?", (batch_id, input_id))
        if row is None:
            return
        targets = concerned(self.hook_targets, event, str(row["job_type"]))
        if targets:
            await self._insert_runs(targets, event, input_id, batch_id,
                                    idempotency_key(event, input_id, row["key"]))

    async def record_pause_hooks(self, reason: str) -> None:
        """The token was refused and work waits: the `paused` runs, with the reason."""
        targets = concerned(self.hook_targets, "paused", None)
        if not targets:
            return
        at = int(self.clock.now().timestamp())
        async with self.transaction():
            await self._insert_runs(targets, "paused", None, None,
                                    idempotency_key("paused", None, None, at),
                                    {"reason": reason})

    async def recover_hook_runs(self) -> int:
        """At start-up: runs a crash left `running` are due again, same key (at-least-once);
        the interrupted attempt is not counted (the daemon died, not the hook)."""
        async with self.transaction() as conn:
            cursor = await conn.execute(
                "UPDATE hook_runs SET state = ?,"
                " attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END,"
                " next_at = ?, updated_at = ? WHERE state = ? RETURNING id",
                (str(RunState.PENDING), iso(self.clock.now()), iso(self.clock.now()),
                 str(RunState.RUNNING)))
            return len(list(await cursor.fetchall()))

    async def claim_due_hook_runs(self, limit: int) -> list[HookRun]:
        """Up to `limit` due pending runs, moved to running (attempts + 1), oldest first."""
        if limit <= 0:
            return []
        now = iso(self.clock.now())
        async with self.transaction() as conn:
            cursor = await conn.execute(
                "UPDATE hook_runs SET state = ?, attempts = attempts + 1, updated_at = ?"
                " WHERE id IN (SELECT id FROM hook_runs WHERE state = ? AND next_at <= ?"
                " ORDER BY next_at, id LIMIT ?) RETURNING *",
                (str(RunState.RUNNING), now, str(RunState.PENDING), now, limit))
            rows = list(await cursor.fetchall())
        return sorted((_run(r) for r in rows), key=lambda r: r.id)

    async def finish_hook_run(self, run_id: int, state: RunState, *,
                              error: str | None = None, delay_s: float = 0.0,
                              uncount: bool = False) -> None:
        """A run's attempt ended: done, failed (for good), or pending again after delay_s
        (`uncount`: it did not really start, e.g. its files were not there yet)."""
        now = self.clock.now()
        final = state in (RunState.DONE, RunState.FAILED)
        async with self.transaction() as conn:
            await conn.execute(
                "UPDATE hook_runs SET state = ?, last_error = COALESCE(?, last_error),"
                " next_at = ?, updated_at = ?, finished_at = ?,"
                " attempts = CASE WHEN attempts > ? THEN attempts - ? ELSE 0 END"
                " WHERE id = ? AND state = ?",
                (str(state), error, iso(now + timedelta(seconds=delay_s)), iso(now),
                 iso(now) if final else None, int(uncount), int(uncount), run_id,
                 str(RunState.RUNNING)))

    async def next_hook_due(self) -> datetime | None:
        row = await self._fetch_one("SELECT MIN(next_at) AS at FROM hook_runs WHERE state = ?",
                                    (str(RunState.PENDING),))
        return None if row is None else from_iso(row["at"])

    async def hook_runs(self, states: tuple[RunState, ...] = tuple(RunState), *,
                        limit: int = 100, input_ids: tuple[int, ...] = ()) -> list[HookRun]:
        wanted = [str(s) for s in states]
        sql = f"SELECT * FROM hook_runs WHERE state IN ({','.join('?' * len(wanted))})"  # noqa: S608
        params: list[Any] = list(wanted)
        if input_ids:
            sql += f" AND input_id IN ({','.join('?' * len(input_ids))})"
            params += list(input_ids)
        rows = await self._fetch_all(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))
        return [_run(r) for r in rows]

    async def get_hook_run(self, run_id: int) -> HookRun | None:
        row = await self._fetch_one("SELECT * FROM hook_runs WHERE id = ?", (run_id,))
        return None if row is None else _run(row)

    async def count_hook_runs(self) -> dict[str, int]:
        rows = await self._fetch_all("SELECT state, COUNT(*) AS n FROM hook_runs GROUP BY state")
        counts = {str(s): 0 for s in RunState}
        counts.update({str(r["state"]): int(r["n"]) for r in rows})
        return counts

    async def retry_hook_runs(self, run_id: int | None = None) -> list[int]:
        """Failed runs (all, or one) back to pending, due now, attempts from 0 again."""
        now = iso(self.clock.now())
        sql = ("UPDATE hook_runs SET state = ?, attempts = 0, next_at = ?, updated_at = ?,"
               " finished_at = NULL WHERE state = ?")
        params: list[Any] = [str(RunState.PENDING), now, now, str(RunState.FAILED)]
        if run_id is not None:
            sql += " AND id = ?"
            params.append(run_id)
        async with self.transaction() as conn:
            cursor = await conn.execute(sql + " RETURNING id", params)
            return sorted(int(r[0]) for r in await cursor.fetchall())


__all__ = ["HookRun", "HookRunStore"]
