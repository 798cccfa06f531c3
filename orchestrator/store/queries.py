"""Read queries of the state database, shared by the daemon's Store (a subclass that adds
the writes). Every method is one SELECT on the store's connection; none changes anything."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import aiosqlite

from orchestrator.clock import from_iso
from orchestrator.core.model import Batch, BatchState, InputFile, InputState, JobType
from orchestrator.core.polling import RECENT_JOBS, Sample
from orchestrator.store.rows import (
    FINAL_BATCH_STATES,
    BatchPart,
    batch_from_row,
    input_from_row,
    sql_list,
)

_FINAL = sql_list(FINAL_BATCH_STATES)
_UNSUCCESSFUL = sql_list([BatchState.FAILED, BatchState.CANCELLED])
# Inputs whose upload body can still give (or gave) results a twin may link to.
_LINKABLE = sql_list([InputState.CLAIMED, InputState.QUEUED, InputState.BATCHED,
                      InputState.DELIVERED])


class SqlConnection(Protocol):
    """What the store needs of a connection: aiosqlite's, or store/postgresql.py's adapter
    (the same `?` placeholders, cursors with fetchone/fetchall/rowcount, rows addressable by
    name and position like sqlite3.Row)."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...

    async def close(self) -> None: ...


class Queries:
    def __init__(self, conn: SqlConnection) -> None:
        self.conn = conn

    async def _fetch_one(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        async with self.conn.execute(sql, params) as cursor:
            row: aiosqlite.Row | None = await cursor.fetchone()
            return row

    async def _fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        async with self.conn.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def out_stem_taken(self, job_type: JobType, stem: str) -> bool:
        row = await self._fetch_one(
            "SELECT 1 FROM inputs WHERE job_type = ? AND out_stem = ?", (job_type, stem)
        )
        return row is not None

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

    async def count_inputs_by_type(self, states: Iterable[InputState]) -> dict[str, int]:
        """Inputs in `states`, counted per job type (types with none are left out)."""
        wanted = [str(s) for s in states]
        marks = ",".join("?" * len(wanted))
        rows = await self._fetch_all(
            f"SELECT job_type, COUNT(*) AS n FROM inputs WHERE state IN ({marks})"  # noqa: S608
            " GROUP BY job_type", wanted,
        )
        return {str(r["job_type"]): int(r["n"]) for r in rows}

    async def twins_of(
        self, job_type: JobType, body_sha256: str, exclude_id: int
    ) -> list[InputFile]:
        """Other live or delivered inputs of the type with the same upload body, oldest first."""
        rows = await self._fetch_all(
            "SELECT * FROM inputs WHERE job_type = ? AND body_sha256 = ? AND id != ?"  # noqa: S608
            f" AND state IN ({_LINKABLE}) ORDER BY id",
            (job_type, body_sha256, exclude_id),
        )
        return [input_from_row(r) for r in rows]

    async def get_batch(self, batch_id: int) -> Batch | None:
        row = await self._fetch_one("SELECT * FROM batches WHERE id = ?", (batch_id,))
        return None if row is None else batch_from_row(row)

    async def active_batches(self, job_types: Iterable[JobType]) -> list[Batch]:
        types = [str(t) for t in job_types]
        marks = ",".join("?" * len(types))
        rows = await self._fetch_all(
            f"SELECT * FROM batches WHERE job_type IN ({marks})"  # noqa: S608
            f" AND state NOT IN ({_FINAL}) ORDER BY id", types,
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

    async def open_batches_sharing(self, batch_id: int, input_ids: Sequence[int]) -> list[int]:
        """Other unfinished batches carrying one of these inputs (a split input)."""
        if not input_ids:
            return []
        marks = ",".join("?" * len(input_ids))
        rows = await self._fetch_all(
            "SELECT DISTINCT bi.batch_id FROM batch_inputs bi"  # noqa: S608
            f" JOIN batches b ON b.id = bi.batch_id WHERE bi.input_id IN ({marks})"
            f" AND bi.batch_id != ? AND b.state NOT IN ({_FINAL})",
            [*input_ids, batch_id],
        )
        return [int(row[0]) for row in rows]

    async def remote_jobs_of(self, batch_id: int) -> list[aiosqlite.Row]:
        return await self._fetch_all(
            "SELECT * FROM remote_jobs WHERE batch_id = ? ORDER BY attempt", (batch_id,)
        )

    async def _covered(self, input_id: int) -> int:
        row = await self._fetch_one(
            "SELECT COALESCE(SUM(bi.id_count), 0) AS n FROM batch_inputs bi"
            " JOIN batches b ON b.id = bi.batch_id WHERE bi.input_id = ? AND b.state = ?",
            (input_id, str(BatchState.DONE)),
        )
        return 0 if row is None else int(row["n"])

    async def covered_ids(self, input_id: int) -> int:
        """How many of the input's IDs went through batches that are done (splitting)."""
        return await self._covered(input_id)

    async def parts_of_input(self, input_id: int) -> list[aiosqlite.Row]:
        return await self._fetch_all(
            "SELECT bi.batch_id, bi.part, bi.first_id, bi.id_count, b.state"  # noqa: S608
            " FROM batch_inputs bi JOIN batches b ON b.id = bi.batch_id WHERE bi.input_id = ?"
            f" AND b.state NOT IN ({_UNSUCCESSFUL}) ORDER BY bi.part", (input_id,),
        )

    async def remote_jobs_of_input(self, input_id: int) -> list[aiosqlite.Row]:
        return await self._fetch_all(
            "SELECT r.*, (SELECT COUNT(*) FROM batch_inputs x WHERE x.batch_id = r.batch_id)"
            " AS batch_inputs FROM remote_jobs r WHERE r.batch_id IN"
            " (SELECT batch_id FROM batch_inputs WHERE input_id = ?)"
            " ORDER BY r.batch_id, r.attempt", (input_id,),
        )

    async def events_after(self, event_id: int = 0) -> list[aiosqlite.Row]:
        """History rows newer than `event_id`, oldest first: id, kind, batch_id, input_id,
        from_state, to_state, host_id (an audit reads the log in slices)."""
        return await self._fetch_all(
            "SELECT id, kind, batch_id, input_id, from_state, to_state, host_id FROM events"
            " WHERE id > ? ORDER BY id", (event_id,),
        )

    async def setting(self, key: str) -> dict[str, Any] | None:
        """An operator setting's value (see migrations/0004), None when unset."""
        row = await self._fetch_one("SELECT value_json FROM settings WHERE key = ?", (key,))
        return None if row is None else dict(json.loads(row["value_json"]))

    async def queued_inputs(self) -> list[InputFile]:
        """Inputs waiting for a batch (claimed or queued), oldest first."""
        return await self.inputs_in([InputState.CLAIMED, InputState.QUEUED])

    async def job_durations(self, job_type: JobType, limit: int = RECENT_JOBS) -> list[Sample]:
        """The newest remote jobs of `job_type` seen complete, newest first: their ID count
        and the seconds from the upload's end to the poll that saw them complete (the poll
        schedule's history, core.polling). A job resubmitted since has no times (CLEAR_REMOTE)."""
        rows = await self._fetch_all(
            "SELECT id_count, uploaded_at, completed_at FROM batches"
            " WHERE job_type = ? AND uploaded_at IS NOT NULL AND completed_at IS NOT NULL"
            " ORDER BY id DESC LIMIT ?", (job_type, limit),
        )
        samples = []
        for row in rows:
            uploaded, completed = from_iso(row["uploaded_at"]), from_iso(row["completed_at"])
            if uploaded is not None and completed is not None:
                samples.append(Sample(row["id_count"], (completed - uploaded).total_seconds()))
        return samples
