"""Read-only reports (store/reports.py): they read while the daemon writes, cannot write, and
never select a signed URL."""

from __future__ import annotations

import random
import sqlite3
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from clocks import FakeClock

from orchestrator.core import machine
from orchestrator.core.model import BatchState, InputState, JobType, RemoteJob, RemoteStatus
from orchestrator.store import reports
from orchestrator.store.sqlite import Store


@pytest.fixture
def backend() -> str:
    """SQLite only: `status` and `jobs` read the SQLite file (store/reports.py)."""
    return "sqlite"

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


def everything(db_path: Path) -> str:
    with reports.open_readonly(db_path) as conn:
        found = [
            reports.input_counts(conn), reports.open_batches(conn),
            reports.recent_outcomes(conn), reports.batch_history(conn, 10),
            reports.batch_total(conn),
            reports.recent_events(conn, ["job.created", "upload.session_started"]),
        ]
        ids = [b["id"] for b in reports.batch_history(conn, 10)]
        found.append(reports.remote_jobs_by_batch(conn, ids))
    return repr(found)


async def test_reports_read_while_a_writer_holds_the_database(
    store: Store, tmp_path: Path
) -> None:
    batch_id = await uploading_batch(store)
    async with store.transaction():  # the daemon mid-write: readers still get the last commit
        text = await anyio.to_thread.run_sync(everything, tmp_path / "state.db")
    assert "'state': 'uploading'" in text and f"'id': {batch_id}" in text
    assert "'x_job_id': '77'" in text
    for marker in ("Signature", "Credential", "storage.example"):
        assert marker not in text


async def test_a_report_connection_cannot_write(tmp_path: Path) -> None:
    opened = await Store.open(tmp_path / "state.db", FakeClock())
    await opened.close()
    with (reports.open_readonly(tmp_path / "state.db") as conn,
          pytest.raises(sqlite3.OperationalError, match="readonly")):
        conn.execute("DELETE FROM events")
