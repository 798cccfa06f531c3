"""Read-only reports (store/reports.py), on both backends: they read while the daemon writes,
cannot write, never select a signed URL, and give the same rows for the same state."""

from __future__ import annotations

import random
import re
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path

import anyio
import psycopg
import pytest
from clocks import FakeClock

from orchestrator.config import StoreConfig
from orchestrator.core import machine
from orchestrator.core.model import BatchState, InputState, JobType, RemoteJob, RemoteStatus
from orchestrator.layout import Layout
from orchestrator.store import reports
from orchestrator.store.pg_reports import PgReader
from orchestrator.store.postgresql import PostgresStore
from orchestrator.store.sqlite import Store

SIGNED = "https://storage.example/o?X-Goog-Signature=deadbeef&X-Goog-Credential=k"


async def uploading_batch(store: Store) -> int:
    item = await store.insert_claiming(job_type=JobType.TWEETS, name="a.txt", out_stem="a",
                                       spool_name="a.spool", inode=1, size_bytes=3)
    await store.move_input(item.id, [InputState.CLAIMING], InputState.CLAIMED, event="t")
    await store.move_input(item.id, [InputState.CLAIMED], InputState.QUEUED, event="t",
                           id_count=3)
    batch = await store.form_batch(JobType.TWEETS, [(item.id, 0, 0, 3)], upload_name="x.ids",
                                   id_count=3, upload_bytes=30)
    creating = await store.apply(batch, machine.start_attempt(batch, 1))
    now = store.clock.now()
    job = RemoteJob(id="77", type=JobType.TWEETS, status=RemoteStatus.CREATED, created_at=now,
                    upload_url=SIGNED, upload_expires_at=now + timedelta(minutes=15),
                    download_url=SIGNED, download_expires_at=now + timedelta(days=7))
    decision = machine.decide(creating, machine.JobCreated(job), now, machine.Policy(),
                              random.Random(0))
    await store.apply(creating, decision)
    session = machine.Decision(BatchState.UPLOADING, "upload.session_started",
                               {"upload_session_url": SIGNED})
    uploading = await store.get_batch(batch.id)
    assert uploading is not None
    await store.apply(uploading, session)
    return batch.id


@pytest.fixture
def open_reader(backend: str, tmp_path: Path, request: pytest.FixtureRequest
                ) -> Callable[[], AbstractContextManager[reports.Reader | None]]:
    """`with open_reader() as reader:` the reports' view of this test's store (either
    backend), opened the way `status` opens it (store/reports.open_reports)."""
    store_config = (StoreConfig(backend="postgresql", dsn=request.getfixturevalue("pg_dsn"))
                    if backend == "postgresql" else None)
    layout = Layout(tmp_path / "inbox", tmp_path / "outbox", tmp_path,
                    store=store_config, host_id="node-a" if store_config else None)
    return lambda: reports.open_reports(layout, environ={})


async def rejected_input(store: Store) -> None:
    item = await store.insert_claiming(job_type=JobType.USERS, name="b.txt", out_stem="b",
                                       spool_name="b.spool", inode=2, size_bytes=9)
    await store.move_input(item.id, [InputState.CLAIMING], InputState.CLAIMED, event="t")
    await store.move_input(item.id, [InputState.CLAIMED], InputState.REJECTED, event="t",
                           error_json={"reason": "too_big", "message": "b.txt: 9 GB"})


def everything(open_reader: Callable[[], AbstractContextManager[reports.Reader | None]]
               ) -> str:
    with open_reader() as reader:
        assert reader is not None
        found = [
            reports.input_counts(reader), reports.open_batches(reader),
            reports.recent_outcomes(reader), reports.batch_history(reader, 10),
            reports.batch_total(reader), reports.queued_inputs(reader),
            reports.hook_runs_report(reader), reports.pause_state(reader),
            reports.recent_events(reader, ["job.created", "upload.session_started"]),
        ]
        ids = [b["id"] for b in reports.batch_history(reader, 10)]
        found.append(reports.remote_jobs_by_batch(reader, ids))
    return repr(found)


async def test_reports_read_while_a_writer_holds_the_database(
    store: Store, open_reader: Callable[[], AbstractContextManager[reports.Reader | None]]
) -> None:
    batch_id = await uploading_batch(store)
    async with store.transaction() as conn:  # the daemon mid-write: readers get the last commit
        await conn.execute("UPDATE batches SET poll_count = 99 WHERE id = ?", (batch_id,))
        text = await anyio.to_thread.run_sync(everything, open_reader)
    assert "'state': 'uploading'" in text and f"'id': {batch_id}" in text
    assert "'x_job_id': '77'" in text and "'files': ['a.txt']" in text
    assert "'poll_count': 99" not in text, "an uncommitted write is not seen"
    for marker in ("Signature", "Credential", "storage.example"):
        assert marker not in text


async def test_reports_are_the_same_on_both_backends(tmp_path: Path, pg_dsn: str) -> None:
    """The same state gives the same rows (types included) on SQLite and PostgreSQL."""
    texts = []
    for backend in ("sqlite", "postgresql"):
        pg = backend == "postgresql"
        store_config = StoreConfig(backend=backend, dsn=pg_dsn if pg else "")
        layout = Layout(tmp_path / "inbox", tmp_path / "outbox", tmp_path / backend,
                        store=store_config, host_id="node-a" if pg else None)
        layout.state_dir.mkdir()
        opened = await (PostgresStore.open_pg(pg_dsn, FakeClock(), db_clock=False) if pg
                        else Store.open(layout.db_path, FakeClock()))
        try:
            await uploading_batch(opened)
            await rejected_input(opened)
        finally:
            await opened.close()
        texts.append(await anyio.to_thread.run_sync(
            everything, lambda layout=layout: reports.open_reports(layout, environ={})))
    random_keys = re.compile(r"'key': 'co-[0-9a-f]+'")  # each batch's key is random
    assert random_keys.sub("'key': K", texts[0]) == random_keys.sub("'key': K", texts[1])
    assert "'reason': 'too_big'" in texts[0] and "'message': 'b.txt: 9 GB'" in texts[0]


async def test_an_empty_store_has_no_reports_yet(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """No state.db, or a PostgreSQL database nobody migrated: None, and nothing created."""
    dsn = ""
    if backend == "postgresql":
        server = request.getfixturevalue("pg_server")
        server.psql("CREATE DATABASE co_reports_empty")
        dsn = server.dsn("co_reports_empty")
    layout = Layout(tmp_path / "inbox", tmp_path / "outbox", tmp_path / "state",
                    store=StoreConfig(backend=backend, dsn=dsn))
    with reports.open_reports(layout, environ={}) as reader:
        assert reader is None
    assert not (tmp_path / "state").exists()
    if backend == "postgresql":
        tables = server.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
                             "co_reports_empty")
        assert tables == "0"


async def test_a_report_connection_cannot_write(
    store: Store, backend: str,
    open_reader: Callable[[], AbstractContextManager[reports.Reader | None]],
) -> None:
    await uploading_batch(store)
    with open_reader() as reader:
        assert isinstance(reader, reports.SqliteReader | PgReader)
        refused: tuple[type[Exception], ...] = (
            (sqlite3.OperationalError,) if backend == "sqlite" else (psycopg.Error,))
        with pytest.raises(refused, match=r"read-?only"):
            reader.rows("DELETE FROM events")
    assert await store.get_batch(1) is not None
