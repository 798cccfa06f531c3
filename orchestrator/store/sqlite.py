"""SQLite adapter: named queries, compare-and-set transitions, the append-only event log.

Every write runs in `BEGIN IMMEDIATE` (autocommit connection), so a transition and its event
row land together or not at all. State changes are guarded: `UPDATE ... WHERE state = :from`
and exactly one row must change, otherwise StaleState is raised and nothing is written.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite
import anyio

from orchestrator.clock import Clock, from_iso, iso
from orchestrator.core.machine import ALLOWED, Decision
from orchestrator.core.model import Batch, BatchState, InputFile, InputState, JobType
from orchestrator.errors import OrchestratorError

_BATCH_COLUMNS = frozenset(
    {
        "state", "attempt", "stage_retries", "stage_waits", "next_attempt_at", "x_job_id",
        "x_job_name", "x_status", "x_error", "x_created_at", "upload_url", "upload_expires_at",
        "download_url", "download_expires_at", "resumable", "upload_session_url", "poll_count",
        "uploaded_at", "completed_at", "last_error", "last_http_status", "finished_at",
    }
)
_INPUT_COLUMNS = frozenset(
    {
        "state", "input_sha256", "id_count", "bad_line_count", "report_json", "error_json",
        "body_sha256",
        "queued_at", "finished_at",
    }
)


class StaleState(OrchestratorError):
    """A compare-and-set transition found the row in another state than expected."""


@dataclass(frozen=True, slots=True)
class BatchPart:
    input: InputFile
    part: int
    first_id: int
    id_count: int


def _db_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return value


def _json_or_none(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def batch_from_row(row: Mapping[str, Any]) -> Batch:
    return Batch(
        id=row["id"], key=row["key"], job_type=JobType(row["job_type"]),
        state=BatchState(row["state"]), attempt=row["attempt"],
        stage_retries=row["stage_retries"], stage_waits=row["stage_waits"],
        next_attempt_at=from_iso(row["next_attempt_at"]), id_count=row["id_count"],
        upload_bytes=row["upload_bytes"], upload_name=row["upload_name"],
        x_job_id=row["x_job_id"],
        x_job_name=row["x_job_name"], x_status=row["x_status"], x_error=row["x_error"],
        x_created_at=from_iso(row["x_created_at"]), upload_url=row["upload_url"],
        upload_expires_at=from_iso(row["upload_expires_at"]), download_url=row["download_url"],
        download_expires_at=from_iso(row["download_expires_at"]),
        resumable=bool(row["resumable"]), upload_session_url=row["upload_session_url"],
        poll_count=row["poll_count"], uploaded_at=from_iso(row["uploaded_at"]),
        completed_at=from_iso(row["completed_at"]), last_error=row["last_error"],
        last_http_status=row["last_http_status"], created_at=from_iso(row["created_at"]),
        updated_at=from_iso(row["updated_at"]),
    )


def input_from_row(row: Mapping[str, Any]) -> InputFile:
    return InputFile(
        id=row["id"], job_type=JobType(row["job_type"]), name=row["name"],
        out_stem=row["out_stem"], state=InputState(row["state"]), spool_name=row["spool_name"],
        inode=row["inode"], size_bytes=row["size_bytes"], input_sha256=row["input_sha256"],
        id_count=row["id_count"], bad_line_count=row["bad_line_count"],
        body_sha256=row["body_sha256"],
        report=_json_or_none(row["report_json"]), error=_json_or_none(row["error_json"]),
        claimed_at=from_iso(row["claimed_at"]), queued_at=from_iso(row["queued_at"]),
        finished_at=from_iso(row["finished_at"]),
    )


class Store:
    def __init__(self, conn: aiosqlite.Connection, clock: Clock) -> None:
        self.conn = conn
        self.clock = clock
        # One connection is shared by the inbox and the lanes: transactions take turns.
        self._write_lock = anyio.Lock()

    @classmethod
    async def open(cls, db_path: Path, clock: Clock, *, backup_dir: Path | None = None) -> Store:
        from orchestrator.store.migrate import apply_migrations, connect

        conn = await connect(db_path)
        try:
            backup = None
            if backup_dir is not None:
                backup_dir.mkdir(parents=True, exist_ok=True)
                stamp = clock.now().strftime("%Y%m%dT%H%M%SZ")
                backup = backup_dir / f"state-before-migration-{stamp}.db"
            await apply_migrations(conn, backup_path=backup)
        except BaseException:
            await conn.close()
            raise
        return cls(conn, clock)

    async def close(self) -> None:
        await self.conn.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        # Shielded: a shutdown arriving mid-transaction waits the few milliseconds it takes,
        # so a transition and its event row always commit or roll back together.
        with anyio.CancelScope(shield=True):
            async with self._write_lock:
                await self.conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self.conn
                except BaseException:
                    await self.conn.execute("ROLLBACK")
                    raise
                await self.conn.execute("COMMIT")

    async def _event(
        self, kind: str, *, batch_id: int | None = None, input_id: int | None = None,
        from_state: str | None = None, to_state: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        await self.conn.execute(
            "INSERT INTO events (at, batch_id, input_id, kind, from_state, to_state, detail_json)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (iso(self.clock.now()), batch_id, input_id, kind, from_state, to_state,
             json.dumps(dict(detail), sort_keys=True, default=str) if detail else None),
        )

    async def record_event(self, kind: str, **kwargs: Any) -> None:
        async with self.transaction():
            await self._event(kind, **kwargs)

    async def _fetch_one(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        async with self.conn.execute(sql, params) as cursor:
            return await cursor.fetchone()

    async def _fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        async with self.conn.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    # ---- inputs ---------------------------------------------------------------------------

    async def out_stem_taken(self, job_type: JobType, stem: str) -> bool:
        row = await self._fetch_one(
            "SELECT 1 FROM inputs WHERE job_type = ? AND out_stem = ?", (job_type, stem)
        )
        return row is not None

    async def insert_claiming(
        self, *, job_type: JobType, name: str, out_stem: str, spool_name: str, inode: int,
        size_bytes: int,
    ) -> InputFile:
        """Persist the intent to claim, before the rename into the spool."""
        async with self.transaction() as conn:
            cursor = await conn.execute(
                "INSERT INTO inputs (job_type, name, out_stem, state, spool_name, inode,"
                " size_bytes, claimed_at) VALUES (?, ?, ?, 'claiming', ?, ?, ?, ?)",
                (job_type, name, out_stem, spool_name, inode, size_bytes, iso(self.clock.now())),
            )
            input_id = cursor.lastrowid
            assert input_id is not None
            await self._event("inbox.claiming", input_id=input_id, to_state="claiming",
                              detail={"file": name, "job_type": str(job_type)})
        found = await self.get_input(input_id)
        assert found is not None
        return found

    async def get_input(self, input_id: int) -> InputFile | None:
        row = await self._fetch_one("SELECT * FROM inputs WHERE id = ?", (input_id,))
        return None if row is None else input_from_row(row)

    async def inputs_in(self, states: Iterable[InputState]) -> list[InputFile]:
        wanted = [str(s) for s in states]
        marks = ",".join("?" * len(wanted))
        rows = await self._fetch_all(
            f"SELECT * FROM inputs WHERE state IN ({marks}) ORDER BY id", wanted  # noqa: S608
        )
        return [input_from_row(r) for r in rows]

    async def twins_of(
        self, job_type: JobType, body_sha256: str, exclude_id: int
    ) -> list[InputFile]:
        """Other live or delivered inputs of the type with the same upload body, oldest first."""
        rows = await self._fetch_all(
            "SELECT * FROM inputs WHERE job_type = ? AND body_sha256 = ? AND id != ?"
            " AND state IN ('claimed', 'queued', 'batched', 'delivered') ORDER BY id",
            (job_type, body_sha256, exclude_id),
        )
        return [input_from_row(r) for r in rows]

    async def all_spool_names(self) -> set[str]:
        rows = await self._fetch_all("SELECT spool_name FROM inputs")
        return {r["spool_name"] for r in rows}

    async def delete_claiming(self, input_id: int, reason: str) -> None:
        """Undo a claim whose rename never happened (the file is still in the inbox, or gone)."""
        async with self.transaction() as conn:
            await conn.execute("DELETE FROM inputs WHERE id = ? AND state = 'claiming'",
                               (input_id,))
            await self._event("inbox.claim_undone", input_id=input_id, from_state="claiming",
                              detail={"reason": reason})

    async def move_input(
        self, input_id: int, from_states: Iterable[InputState], to_state: InputState,
        *, event: str, detail: Mapping[str, Any] | None = None, **changes: Any,
    ) -> InputFile:
        async with self.transaction():
            await self._move_input(input_id, from_states, to_state, event=event, detail=detail,
                                   **changes)
        found = await self.get_input(input_id)
        assert found is not None
        return found

    async def _move_input(
        self, input_id: int, from_states: Iterable[InputState], to_state: InputState,
        *, event: str, detail: Mapping[str, Any] | None = None, **changes: Any,
    ) -> None:
        unknown = set(changes) - _INPUT_COLUMNS
        if unknown:
            raise ValueError(f"unknown input columns: {sorted(unknown)}")
        allowed = [str(s) for s in from_states]
        values = {"state": str(to_state), **{k: _db_value(v) for k, v in changes.items()}}
        if to_state.is_final:
            values["finished_at"] = iso(self.clock.now())
        assignments = ", ".join(f"{column} = ?" for column in values)
        if to_state is InputState.REJECTED and InputState.REJECTED not in from_states:
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
        await self._event(event, input_id=input_id, from_state="|".join(allowed),
                          to_state=str(to_state), detail=detail)

    # ---- batches --------------------------------------------------------------------------

    async def form_batch(
        self, job_type: JobType, parts: Sequence[tuple[int, int, int, int]], *,
        upload_name: str, id_count: int, upload_bytes: int,
    ) -> Batch:
        """Create a queued batch carrying `parts` = (input_id, part, first_id, id_count); the
        inputs move queued -> batched in the same transaction."""
        now = iso(self.clock.now())
        key = f"co-{secrets.token_hex(6)}"
        async with self.transaction() as conn:
            cursor = await conn.execute(
                "INSERT INTO batches (key, job_type, state, id_count, upload_bytes, upload_name,"
                " created_at, updated_at) VALUES (?, ?, 'queued', ?, ?, ?, ?, ?)",
                (key, job_type, id_count, upload_bytes, upload_name, now, now),
            )
            batch_id = cursor.lastrowid
            assert batch_id is not None
            for input_id, part, first_id, count in parts:
                await conn.execute(
                    "INSERT INTO batch_inputs (batch_id, input_id, part, first_id, id_count)"
                    " VALUES (?, ?, ?, ?, ?)", (batch_id, input_id, part, first_id, count),
                )
                await self._move_input(input_id, [InputState.QUEUED, InputState.BATCHED],
                                       InputState.BATCHED, event="batch.input_added",
                                       detail={"batch_id": batch_id, "part": part})
            await self._event("batch.formed", batch_id=batch_id, to_state="queued",
                              detail={"inputs": len(parts), "ids": id_count, "key": key})
        batch = await self.get_batch(batch_id)
        assert batch is not None
        return batch

    async def get_batch(self, batch_id: int) -> Batch | None:
        row = await self._fetch_one("SELECT * FROM batches WHERE id = ?", (batch_id,))
        return None if row is None else batch_from_row(row)

    async def get_batch_row(self, batch_id: int) -> aiosqlite.Row | None:
        return await self._fetch_one("SELECT * FROM batches WHERE id = ?", (batch_id,))

    async def active_batches(self, job_types: Iterable[JobType]) -> list[Batch]:
        types = [str(t) for t in job_types]
        marks = ",".join("?" * len(types))
        rows = await self._fetch_all(
            f"SELECT * FROM batches WHERE job_type IN ({marks})"  # noqa: S608
            " AND state NOT IN ('done', 'failed', 'cancelled') ORDER BY id", types,
        )
        return [batch_from_row(r) for r in rows]

    async def batch_parts(self, batch_id: int) -> list[BatchPart]:
        rows = await self._fetch_all(
            "SELECT i.*, bi.part AS bi_part, bi.first_id AS bi_first_id,"
            " bi.id_count AS bi_id_count FROM batch_inputs bi JOIN inputs i ON i.id = bi.input_id"
            " WHERE bi.batch_id = ? ORDER BY bi.input_id, bi.part", (batch_id,),
        )
        return [BatchPart(input_from_row(r), r["bi_part"], r["bi_first_id"], r["bi_id_count"])
                for r in rows]

    async def remote_jobs_of(self, batch_id: int) -> list[aiosqlite.Row]:
        return await self._fetch_all(
            "SELECT * FROM remote_jobs WHERE batch_id = ? ORDER BY attempt", (batch_id,)
        )

    async def apply(
        self, batch: Batch, decision: Decision, *, input_error: Mapping[str, Any] | None = None
    ) -> Batch:
        """Persist a Decision with compare-and-set on the batch state. When the batch fails, its
        inputs become `rejected` (carrying `input_error`); when it is done, `delivered`."""
        to_state = decision.to_state
        if to_state not in ALLOWED[batch.state]:
            raise StaleState(f"transition {batch.state} -> {to_state} is not allowed")
        unknown = set(decision.changes) - _BATCH_COLUMNS
        if unknown:
            raise ValueError(f"unknown batch columns: {sorted(unknown)}")
        now = self.clock.now()
        values: dict[str, Any] = {k: _db_value(v) for k, v in decision.changes.items()}
        values["state"] = str(to_state)
        values["updated_at"] = iso(now)
        if to_state.is_final:
            values["finished_at"] = iso(now)
        assignments = ", ".join(f"{column} = ?" for column in values)
        async with self.transaction() as conn:
            cursor = await conn.execute(
                f"UPDATE batches SET {assignments} WHERE id = ? AND state = ?"  # noqa: S608
                " RETURNING id",
                (*values.values(), batch.id, str(batch.state)),
            )
            if await cursor.fetchone() is None:
                raise StaleState(f"batch {batch.id} is no longer {batch.state}")
            await self._record_remote_job(batch, decision)
            await self._event(decision.event, batch_id=batch.id, from_state=str(batch.state),
                              to_state=str(to_state), detail=decision.detail)
            if to_state in (BatchState.FAILED, BatchState.DONE, BatchState.CANCELLED):
                await self._finish_inputs(batch.id, to_state, input_error)
        updated = await self.get_batch(batch.id)
        assert updated is not None
        return updated

    async def _record_remote_job(self, batch: Batch, decision: Decision) -> None:
        changes = decision.changes
        if changes.get("x_job_id") and changes.get("x_job_id") != batch.x_job_id:
            await self.conn.execute(
                "INSERT OR IGNORE INTO remote_jobs (x_job_id, batch_id, attempt, name, job_type,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (changes["x_job_id"], batch.id, batch.attempt, batch.x_job_name, batch.job_type,
                 _db_value(changes.get("x_created_at"))),
            )
        if batch.x_job_id and ("x_job_id" in changes or "x_status" in changes):
            final = changes.get("x_status") or decision.detail.get("status")
            error = decision.detail.get("job_error")
            reason = decision.detail.get("reason")
            await self.conn.execute(
                "UPDATE remote_jobs SET final_status = COALESCE(?, final_status),"
                " error = COALESCE(?, error) WHERE x_job_id = ?",
                (str(final) if final else (reason and "abandoned"), error, batch.x_job_id),
            )

    async def _finish_inputs(
        self, batch_id: int, to_state: BatchState, input_error: Mapping[str, Any] | None
    ) -> None:
        rows = await self._fetch_all(
            "SELECT DISTINCT bi.input_id, i.id_count, i.name, i.job_type, i.state"
            " FROM batch_inputs bi JOIN inputs i ON i.id = bi.input_id WHERE bi.batch_id = ?",
            (batch_id,),
        )
        for row in rows:
            input_id = row["input_id"]
            if row["state"] == InputState.DELIVERED:
                continue  # marked one by one during delivery (mark_delivered)
            changes: dict[str, Any] = {}
            if to_state is BatchState.CANCELLED:
                target, event = InputState.QUEUED, "batch.input_released"
            elif to_state is BatchState.FAILED:
                target, event = InputState.REJECTED, "input.rejected"
                # Per input, so `requeue` and `retry` can find the file and its type.
                changes["error_json"] = {
                    **dict(input_error or {}), "file": row["name"], "input_id": input_id,
                    "job_type": row["job_type"], "batch_id": batch_id,
                }
            elif await self._covered(input_id) >= (row["id_count"] or 0):
                target, event = InputState.DELIVERED, "outbox.delivered"
            else:  # a split input with parts still to run
                target, event = InputState.QUEUED, "input.part_done"
            await self._move_input(input_id, [InputState.BATCHED], target, event=event,
                                   detail={"batch_id": batch_id}, **changes)

    async def _covered(self, input_id: int) -> int:
        row = await self._fetch_one(
            "SELECT COALESCE(SUM(bi.id_count), 0) AS n FROM batch_inputs bi"
            " JOIN batches b ON b.id = bi.batch_id WHERE bi.input_id = ? AND b.state = 'done'",
            (input_id,),
        )
        return 0 if row is None else int(row["n"])

    async def mark_delivered(self, input_id: int, batch_id: int) -> None:
        """One input of a delivering batch is durably in the outbox: never write it again."""
        async with self.transaction():
            await self._move_input(input_id, [InputState.BATCHED], InputState.DELIVERED,
                                   event="outbox.delivered", detail={"batch_id": batch_id})

    async def covered_ids(self, input_id: int) -> int:
        """How many of the input's IDs went through batches that are done (splitting)."""
        return await self._covered(input_id)

    async def parts_of_input(self, input_id: int) -> list[aiosqlite.Row]:
        return await self._fetch_all(
            "SELECT bi.batch_id, bi.part, bi.first_id, bi.id_count, b.state FROM batch_inputs bi"
            " JOIN batches b ON b.id = bi.batch_id WHERE bi.input_id = ?"
            " AND b.state NOT IN ('failed', 'cancelled') ORDER BY bi.part", (input_id,),
        )

    async def remote_jobs_of_input(self, input_id: int) -> list[aiosqlite.Row]:
        return await self._fetch_all(
            "SELECT r.*, (SELECT COUNT(*) FROM batch_inputs x WHERE x.batch_id = r.batch_id)"
            " AS batch_inputs FROM remote_jobs r WHERE r.batch_id IN"
            " (SELECT batch_id FROM batch_inputs WHERE input_id = ?)"
            " ORDER BY r.batch_id, r.attempt", (input_id,),
        )

    # ---- status ---------------------------------------------------------------------------

    async def input_counts(self) -> dict[tuple[str, str], int]:
        rows = await self._fetch_all(
            "SELECT job_type, state, COUNT(*) AS n FROM inputs GROUP BY job_type, state"
        )
        return {(r["job_type"], r["state"]): r["n"] for r in rows}

    async def recent_inputs(self, limit: int = 10) -> list[InputFile]:
        rows = await self._fetch_all(
            "SELECT * FROM inputs WHERE state IN ('delivered', 'rejected')"
            " ORDER BY finished_at DESC, id DESC LIMIT ?", (limit,),
        )
        return [input_from_row(r) for r in rows]

    async def remote_job_count(self) -> int:
        row = await self._fetch_one("SELECT COUNT(*) AS n FROM remote_jobs")
        return 0 if row is None else int(row["n"])
