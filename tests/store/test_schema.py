"""Schema snapshot: the migrations produce exactly the checked-in store/schema.sql, and the
store's column lists and row mappers cover the columns of that schema (no more, no less)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from orchestrator.core.model import InputState, JobType
from orchestrator.store import rows
from orchestrator.store.schema import SCHEMA_FILE, main, migrated_schema
from orchestrator.store.sqlite import Store

REGENERATE = "python -m orchestrator.store.schema"


async def test_migrations_produce_the_checked_in_schema() -> None:
    expected = SCHEMA_FILE.read_text(encoding="utf-8")
    assert await migrated_schema() == expected, (
        f"the migrated schema differs from {SCHEMA_FILE.name}: if the change is intended, "
        f"run `{REGENERATE}` and review the diff")


def test_check_mode_reports_a_stale_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = tmp_path / "schema.sql"
    stale.write_text("-- old\n", encoding="utf-8")
    monkeypatch.setattr("orchestrator.store.schema.SCHEMA_FILE", stale)
    assert main(["--check"]) == 1
    assert main([]) == 0
    assert main(["--check"]) == 0
    assert stale.read_text(encoding="utf-8") == SCHEMA_FILE.read_text(encoding="utf-8")


def _table_columns(table: str) -> set[str]:
    """Column names of `table` as schema.sql defines it (loaded into a scratch database)."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(SCHEMA_FILE.read_text(encoding="utf-8"))
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    finally:
        conn.close()
    assert columns, f"no table {table} in {SCHEMA_FILE.name}"
    return columns


class Recording(dict[str, Any]):
    """A row that remembers which columns a mapper read."""

    def __init__(self, row: aiosqlite.Row) -> None:
        super().__init__(dict(zip(row.keys(), row, strict=True)))
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)


def _differences(name: str, schema: set[str], covered: set[str]) -> list[str]:
    problems = [f"{name}.{c}: in the schema, but neither mapped nor listed as unmapped"
                for c in sorted(schema - covered)]
    problems += [f"{name}.{c}: used by the store, but not a column of the schema"
                 for c in sorted(covered - schema)]
    return problems


async def test_store_columns_match_the_schema(store: Store) -> None:
    batches, inputs = _table_columns("batches"), _table_columns("inputs")
    assert {"id", "state", "body_sha256", "x_error"} <= batches | inputs  # the parser works
    item = await store.insert_claiming(job_type=JobType.TWEETS, name="a.txt", out_stem="a",
                                       spool_name="a.spool", inode=1, size_bytes=3)
    await store.move_input(item.id, [InputState.CLAIMING], InputState.CLAIMED, event="t")
    await store.move_input(item.id, [InputState.CLAIMED], InputState.QUEUED, event="t")
    batch = await store.form_batch(JobType.TWEETS, [(item.id, 0, 0, 3)], upload_name="x.ids",
                                   id_count=3, upload_bytes=30)
    async with store.conn.execute("SELECT * FROM batches WHERE id = ?", (batch.id,)) as cur:
        batch_row = Recording(await cur.fetchone())
    async with store.conn.execute("SELECT * FROM inputs WHERE id = ?", (item.id,)) as cur:
        input_row = Recording(await cur.fetchone())
    rows.batch_from_row(batch_row)
    rows.input_from_row(input_row)
    problems = _differences("batches", batches, batch_row.read | set(rows.BATCH_UNMAPPED))
    problems += _differences("inputs", inputs, input_row.read | set(rows.INPUT_UNMAPPED))
    problems += _differences("batches (writable)", batches, batches | rows.BATCH_COLUMNS)
    problems += _differences("inputs (writable)", inputs, inputs | rows.INPUT_COLUMNS)
    mapped_and_unmapped = (batch_row.read & set(rows.BATCH_UNMAPPED)) | (
        input_row.read & set(rows.INPUT_UNMAPPED))
    problems += [f"{c}: listed as unmapped but read by a mapper"
                 for c in sorted(mapped_and_unmapped)]
    assert not problems, "\n".join(problems)
