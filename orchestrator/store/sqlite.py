"""The write model: named queries, compare-and-set transitions, the append-only event log.

ONE write model for both engines: this Store opens SQLite (the embedded default), and
store/postgresql.py's PostgresStore subclasses it, changing only the engine's details (the
connection, BEGIN, NULL-safe `IS`, row locks, time types; see FencedWrites). Its SQL is
therefore the dialect both speak (`ON CONFLICT`, `RETURNING`, `?` placeholders that the
PostgreSQL adapter translates). It stays in this module, not a base.py, so the SQLite side's
history (and the cluster branch's edits of it) stay where they were.

Every write runs in `BEGIN IMMEDIATE` (autocommit connection), so a transition and its event
row land together or not at all. State changes are guarded: `UPDATE ... WHERE state = :from`
and exactly one row must change, otherwise StaleState is raised and nothing is written. The
transitions themselves are decided in core (machine, operator, inputs); this only executes
and records them.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.clock import Clock, iso
from orchestrator.core.decision import Decision
from orchestrator.core.inputs import CarriedInput, batch_finished, check_input_move
from orchestrator.core.machine import ALLOWED
from orchestrator.core.model import Batch, BatchState, InputFile, InputState, JobType
from orchestrator.core.operator import SettingChange
from orchestrator.errors import OrchestratorError
from orchestrator.store.hookruns import HookRunStore
from orchestrator.store.rows import BATCH_COLUMNS, INPUT_COLUMNS, BatchPart, db_value

__all__ = ["BatchPart", "EventNote", "StaleState", "Store"]

class StaleState(OrchestratorError):
    """A compare-and-set transition found the row in another state than expected."""


@dataclass(frozen=True, slots=True)
class EventNote:
    """A history line with no state change (e.g. an operator's requeue)."""

    kind: str
    batch_id: int | None = None
    input_id: int | None = None
    from_state: str | None = None
    to_state: str | None = None
    detail: Mapping[str, Any] | None = None


class Store(HookRunStore):
    """The write model: transitions (compare-and-set), claims, batches, the event log; the
    reads come from Queries."""

    @classmethod
    async def open(
        cls, db_path: Path, clock: Clock, *, backup_dir: Path | None = None,
        host_id: str | None = None,
    ) -> Store:
        from orchestrator.store.migrate import apply_migrations, connect

        conn = await connect(db_path)
        try:
            backup = None
            if backup_dir is not None:
                backup_dir.mkdir(parents=True, exist_ok=True)
                stamp = clock.now().strftime("%Y%m%dT%H%M%SZ")
                backup = backup_dir / f"state-before-migration-{stamp}.db"
            await apply_migrations(conn, backup_path=backup, clock=clock)
        except BaseException:
            await conn.close()
            raise
        return cls(conn, clock, host_id)

    async def close(self) -> None:
        await self.conn.close()

    async def record_events(
        self, notes: Sequence[EventNote], *, batch_in: tuple[int, BatchState] | None = None
    ) -> None:
        """Append history lines in one transaction; with `batch_in=(id, state)`, only while
        that batch is still in that state (else StaleState, nothing written)."""
        async with self.transaction():
            if batch_in is not None:
                row = await self._fetch_one(
                    f"SELECT state FROM batches WHERE id = ?{self.FOR_UPDATE}",  # noqa: S608
                    (batch_in[0],),
                )
                if row is None or row["state"] != batch_in[1]:
                    raise StaleState(f"batch {batch_in[0]} is no longer {batch_in[1]}")
            for note in notes:
                await self._event(note.kind, batch_id=note.batch_id, input_id=note.input_id,
                                  from_state=note.from_state, to_state=note.to_state,
                                  detail=note.detail)

    async def change_setting(self, change: SettingChange) -> None:
        """Persist an operator setting change and its event in one transaction, only if the
        row still reads as the core saw it (else StaleState, nothing written)."""
        async with self.transaction():
            row = await self._fetch_one(
                f"SELECT value_json FROM settings WHERE key = ?{self.FOR_UPDATE}",  # noqa: S608
                (change.key,),
            )
            since = None if row is None else json.loads(row["value_json"]).get("since")
            if (row is None) != (change.expected_since is None) or since != change.expected_since:
                raise StaleState(f"setting {change.key!r} changed meanwhile")
            if change.value is None:
                await self.conn.execute("DELETE FROM settings WHERE key = ?", (change.key,))
            else:
                await self.conn.execute(
                    "INSERT INTO settings (key, value_json, updated_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value_json = excluded.value_json,"
                    " updated_at = excluded.updated_at",
                    (change.key, json.dumps(dict(change.value), sort_keys=True),
                     iso(self.clock.now())),
                )
            await self._event(change.event, detail=change.detail)

    # ---- inputs ---------------------------------------------------------------------------

    async def insert_claiming(
        self, *, job_type: JobType, name: str, out_stem: str, spool_name: str, inode: int,
        size_bytes: int, name_bytes: bytes | None = None, mtime_ns: int | None = None,
        ctime_ns: int | None = None,
    ) -> InputFile:
        """Persist the intent to claim, before the rename into the spool. StaleState when
        the outbox name is taken meanwhile (another host claiming: its rename decides)."""
        async with self.transaction() as conn:
            try:
                cursor = await conn.execute(
                    "INSERT INTO inputs (job_type, name, out_stem, state, spool_name, inode,"
                    " size_bytes, name_bytes, mtime_ns, ctime_ns, claimed_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (job_type, name, out_stem, str(InputState.CLAIMING), spool_name, inode,
                     size_bytes, name_bytes, mtime_ns, ctime_ns, iso(self.clock.now())),
                )
                input_id = int((await cursor.fetchone())[0])
            except self.INTEGRITY_ERRORS as taken:
                raise StaleState(f"outbox name {out_stem!r} was taken meanwhile") from taken
            await self._event("inbox.claiming", input_id=input_id,
                              to_state=str(InputState.CLAIMING),
                              detail={"file": name, "job_type": str(job_type)})
        found = await self.get_input(input_id)
        assert found is not None
        return found

    async def delete_claiming(self, input_id: int, reason: str) -> None:
        """Undo a claim whose rename never happened (the file is still in the inbox, or gone).
        Compare-and-set like every move: StaleState (nothing written) unless still claiming."""
        async with self.transaction() as conn:
            cursor = await conn.execute(
                "DELETE FROM inputs WHERE id = ? AND state = ? RETURNING id",
                (input_id, str(InputState.CLAIMING)),
            )
            if await cursor.fetchone() is None:
                raise StaleState(f"input {input_id} is not {InputState.CLAIMING}")
            await self._event("inbox.claim_undone", input_id=input_id,
                              from_state=str(InputState.CLAIMING), detail={"reason": reason})

    async def move_input(
        self, input_id: int, from_states: Iterable[InputState], to_state: InputState,
        *, event: str, detail: Mapping[str, Any] | None = None, fenced: bool = False,
        **changes: Any,
    ) -> InputFile:
        """One input move in its own transaction; `fenced` for a move the leader's batch work
        makes (e.g. rejecting an input mid-delivery): LeaseLost once the lease is gone."""
        async with self.transaction(fenced=fenced):
            await self._move_input(input_id, from_states, to_state, event=event, detail=detail,
                                   **changes)
        found = await self.get_input(input_id)
        assert found is not None
        return found

    async def _move_input(
        self, input_id: int, from_states: Iterable[InputState], to_state: InputState,
        *, event: str, detail: Mapping[str, Any] | None = None, batch_id: int | None = None,
        **changes: Any,
    ) -> None:
        """The one place an input changes state: checked against core.inputs.INPUT_ALLOWED,
        compare-and-set on the state, with its event row."""
        sources = list(from_states)
        check_input_move(sources, to_state)
        unknown = set(changes) - INPUT_COLUMNS
        if unknown:
            raise ValueError(f"unknown input columns: {sorted(unknown)}")
        allowed = [str(s) for s in sources]
        values = {"state": str(to_state), **{k: db_value(v) for k, v in changes.items()}}
        if to_state.is_final:
            values["finished_at"] = iso(self.clock.now())
        assignments = ", ".join(f"{column} = ?" for column in values)
        if to_state is InputState.REJECTED:
            # Free the outbox name: a requeued copy of the file gets `ids.jsonl`, not `ids-2`.
            assignments += ", out_stem = out_stem || '#rejected-' || id"
        marks = ",".join("?" * len(allowed))
        cursor = await self.conn.execute(
            f"UPDATE inputs SET {assignments} WHERE id = ? AND state IN ({marks})"  # noqa: S608
            " RETURNING id",
            (*values.values(), input_id, *allowed),
        )
        if await cursor.fetchone() is None:
            raise StaleState(f"input {input_id} is not in {allowed}")
        await self._event(event, batch_id=batch_id, input_id=input_id,
                          from_state="|".join(allowed), to_state=str(to_state), detail=detail)
        await self._hook_intents(input_id, to_state, batch_id)  # same transaction: durable

    # ---- batches --------------------------------------------------------------------------

    async def form_batch(
        self, job_type: JobType, parts: Sequence[tuple[int, int, int, int]], *,
        upload_name: str, id_count: int, upload_bytes: int,
    ) -> Batch:
        """Create a queued batch carrying `parts` = (input_id, part, first_id, id_count); the
        inputs move queued -> batched in the same transaction. An input already in another
        batch is refused (StaleState, nothing written): that batch could never finish, since
        finishing moves its inputs out of `batched`."""
        now = iso(self.clock.now())
        key = f"co-{secrets.token_hex(6)}"
        async with self.transaction(fenced=True) as conn:
            cursor = await conn.execute(
                "INSERT INTO batches (key, job_type, state, id_count, upload_bytes, upload_name,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (key, job_type, str(BatchState.QUEUED), id_count, upload_bytes, upload_name,
                 now, now),
            )
            batch_id = int((await cursor.fetchone())[0])
            joined: set[int] = set()  # a second part of one input in this same batch
            for input_id, part, first_id, count in parts:
                await conn.execute(
                    "INSERT INTO batch_inputs (batch_id, input_id, part, first_id, id_count)"
                    " VALUES (?, ?, ?, ?, ?)", (batch_id, input_id, part, first_id, count),
                )
                source = InputState.BATCHED if input_id in joined else InputState.QUEUED
                await self._move_input(input_id, [source], InputState.BATCHED,
                                       event="batch.input_added",
                                       detail={"batch_id": batch_id, "part": part})
                joined.add(input_id)
            await self._event("batch.formed", batch_id=batch_id,
                              to_state=str(BatchState.QUEUED),
                              detail={"inputs": len(parts), "ids": id_count, "key": key})
        batch = await self.get_batch(batch_id)
        assert batch is not None
        return batch

    async def apply(
        self, batch: Batch, decision: Decision, *,
        input_error: Mapping[str, Any] | None = None,
        input_errors: Mapping[int, Mapping[str, Any]] | None = None,
    ) -> Batch:
        """Persist a Decision with compare-and-set on the batch state (and its guard columns).

        When the batch reaches a final state its inputs move as core.inputs.batch_finished
        says; a rejected input's error record is `input_error`, then its own entry of
        `input_errors`, then who it is (file, input_id, job_type, batch_id).
        """
        to_state = decision.to_state
        if to_state not in ALLOWED[batch.state]:
            raise StaleState(f"transition {batch.state} -> {to_state} is not allowed")
        unknown = (set(decision.changes) | set(decision.guard)) - BATCH_COLUMNS
        if unknown:
            raise ValueError(f"unknown batch columns: {sorted(unknown)}")
        now = self.clock.now()
        values: dict[str, Any] = {k: db_value(v) for k, v in decision.changes.items()}
        values["state"] = str(to_state)
        values["updated_at"] = iso(now)
        if to_state.is_final:
            values["finished_at"] = iso(now)
        assignments = ", ".join(f"{column} = ?" for column in values)
        guards = "".join(f" AND {column} {self.IS} ?" for column in decision.guard)
        async with self.transaction(fenced=True) as conn:
            cursor = await conn.execute(
                f"UPDATE batches SET {assignments} WHERE id = ? AND state = ?{guards}"  # noqa: S608
                " RETURNING id",
                (*values.values(), batch.id, str(batch.state),
                 *(db_value(v) for v in decision.guard.values())),
            )
            if await cursor.fetchone() is None:
                raise StaleState(f"batch {batch.id} is no longer {batch.state}")
            await self._record_remote_job(batch, decision)
            await self._event(decision.event, batch_id=batch.id, from_state=str(batch.state),
                              to_state=str(to_state), detail=decision.detail)
            if to_state.is_final:
                await self._finish_inputs(batch.id, decision, input_error, input_errors or {})
        updated = await self.get_batch(batch.id)
        assert updated is not None
        return updated

    async def _record_remote_job(self, batch: Batch, decision: Decision) -> None:
        changes = decision.changes
        if changes.get("x_job_id") and changes.get("x_job_id") != batch.x_job_id:
            await self.conn.execute(
                "INSERT INTO remote_jobs (x_job_id, batch_id, attempt, name, job_type,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (changes["x_job_id"], batch.id, batch.attempt, batch.x_job_name, batch.job_type,
                 db_value(changes.get("x_created_at"))),
            )
        outcome = decision.remote_outcome
        if batch.x_job_id and outcome is not None:
            # COALESCE(new, old) records the latest word; COALESCE(old, new) only fills blanks.
            status, error = (("?, final_status", "?, error") if outcome.replace
                             else ("final_status, ?", "error, ?"))
            await self.conn.execute(
                f"UPDATE remote_jobs SET final_status = COALESCE({status}),"  # noqa: S608
                f" error = COALESCE({error}) WHERE x_job_id = ?",
                (outcome.status, outcome.error, batch.x_job_id),
            )

    async def _finish_inputs(
        self, batch_id: int, decision: Decision, input_error: Mapping[str, Any] | None,
        input_errors: Mapping[int, Mapping[str, Any]],
    ) -> None:
        rows = await self._fetch_all(
            "SELECT DISTINCT bi.input_id, i.id_count, i.name, i.job_type, i.state"
            " FROM batch_inputs bi JOIN inputs i ON i.id = bi.input_id WHERE bi.batch_id = ?",
            (batch_id,),
        )
        carried = [
            CarriedInput(r["input_id"], InputState(r["state"]), r["id_count"],
                         await self._covered(r["input_id"]))
            for r in rows
        ]
        by_id = {r["input_id"]: r for r in rows}
        for move in batch_finished(batch_id, decision.to_state, carried,
                                   reason=decision.reject_reason):
            changes: dict[str, Any] = {}
            if move.rejected:
                row = by_id[move.input_id]
                # Per input, so `requeue` and `retry` can find the file and its type.
                changes["error_json"] = {
                    **dict(input_error or {}), **dict(input_errors.get(move.input_id, {})),
                    "file": row["name"], "input_id": move.input_id,
                    "job_type": row["job_type"], "batch_id": batch_id,
                }
            await self._move_input(move.input_id, [InputState.BATCHED], move.to_state,
                                   event=move.event, detail=move.detail, batch_id=batch_id,
                                   **changes)

    async def mark_delivered(self, input_id: int, batch_id: int) -> None:
        """One input of a delivering batch is durably in the outbox: never write it again.
        StaleState (nothing written) unless the batch is delivering and carries the input: a
        delivered input must never sit in a batch that can still fail or be cancelled."""
        async with self.transaction(fenced=True):
            row = await self._fetch_one(
                "SELECT b.state FROM batches b JOIN batch_inputs bi ON bi.batch_id = b.id"  # noqa: S608
                f" WHERE b.id = ? AND bi.input_id = ? LIMIT 1{self.FOR_UPDATE}",
                (batch_id, input_id),
            )
            if row is None or row["state"] != BatchState.DELIVERING:
                raise StaleState(f"batch {batch_id} is not delivering input {input_id}")
            await self._move_input(input_id, [InputState.BATCHED], InputState.DELIVERED,
                                   event="outbox.delivered", detail={"batch_id": batch_id},
                                   batch_id=batch_id)
