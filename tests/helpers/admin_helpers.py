"""Helpers for the operator-command tests: run the CLI, build state, run the daemon."""

from __future__ import annotations

import json
import random
import secrets
import sqlite3
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from daemon_helpers import TOKEN, running_service, write_config

from orchestrator import cli
from orchestrator.clock import SystemClock
from orchestrator.config import Config
from orchestrator.core.model import InputState, JobType
from orchestrator.daemon.service import Service
from orchestrator.layout import Layout
from orchestrator.store.sqlite import Store

SIGNED = "https://storage.example/bucket/obj?X-Goog-Signature=deadbeefcafe&X-Goog-Credential=k"
SECRET_MARKERS = ("Signature", "Credential", "X-Goog", "upload_id=", TOKEN, "deadbeef")


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> Run:
    """`compliance-orchestrator ARGV` in this process; stdout/stderr captured."""
    capsys.readouterr()
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


async def arun_cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> Run:
    """The same from async code, in a worker thread: the daemon keeps running meanwhile."""
    capsys.readouterr()
    code = await anyio.to_thread.run_sync(cli.main, [str(a) for a in argv])
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def assert_no_secrets(*texts: str) -> None:
    for text in texts:
        for marker in SECRET_MARKERS:
            assert marker not in text, f"{marker!r} leaked into command output"


def layout_of(workdir: Path) -> Layout:
    return Layout(workdir / "inbox", workdir / "outbox", workdir / "state")


def offline_config(workdir: Path) -> Path:
    """A config for commands that never talk to the API (port 9: discard, nobody listens)."""
    return write_config(workdir, "http://127.0.0.1:9")


def slow_backoff_config(workdir: Path, base_url: str, **overrides: Any) -> Path:
    """Backoffs of a minute (with MaxRandom: exactly), so a batch visibly waits."""
    path = write_config(workdir, base_url, **overrides)
    text = path.read_text()
    text = text.replace("backoff_initial_s = 0.05", "backoff_initial_s = 60.0")
    text = text.replace("backoff_max_s = 0.5", "backoff_max_s = 120.0")
    path.write_text(text)
    return path


class MaxRandom(random.Random):
    """Jitter always at its upper bound: waits are exactly as long as configured."""

    def uniform(self, a: float, b: float) -> float:
        return b


def db(workdir: Path, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    conn = sqlite3.connect(workdir / "state" / "state.db", timeout=5)
    conn.row_factory = sqlite3.Row
    try:
        rows = [dict(r) for r in conn.execute(sql, params)]
        conn.commit()
        return rows
    finally:
        conn.close()


def batch_row(workdir: Path, batch_id: int = 1) -> dict[str, Any]:
    rows = db(workdir, "SELECT * FROM batches WHERE id = ?", (batch_id,))
    return rows[0] if rows else {}


async def make_batch(
    workdir: Path, name: str = "ids.txt", job_type: JobType = JobType.TWEETS,
    content: bytes = b"1\n2\n3\n",
) -> int:
    """A queued batch of one input, as the daemon leaves it: input file and upload body in the
    spool, rows in the database. Returns the batch id."""
    layout = layout_of(workdir)
    layout.ensure()
    store = await Store.open(layout.db_path, SystemClock(), backup_dir=layout.backups)
    try:
        item = await store.insert_claiming(
            job_type=job_type, name=name, out_stem=Path(name).stem,
            spool_name=f"{secrets.token_hex(6)}.{job_type}", inode=1, size_bytes=len(content),
        )
        (layout.spool / item.spool_name).write_bytes(content)
        (layout.spool / item.ids_name).write_bytes(content)
        await store.move_input(item.id, [InputState.CLAIMING], InputState.CLAIMED,
                               event="inbox.claimed")
        await store.move_input(item.id, [InputState.CLAIMED], InputState.QUEUED,
                               event="input.queued", id_count=3)
        batch = await store.form_batch(job_type, [(item.id, 0, 0, 3)], upload_name=item.ids_name,
                                       id_count=3, upload_bytes=len(content))
    finally:
        await store.close()
    return batch.id


def set_batch(workdir: Path, batch_id: int, **columns: Any) -> None:
    """Put a batch into a state the tests need (as the daemon would have persisted it)."""
    assignments = ", ".join(f"{k} = ?" for k in columns)
    db(workdir, f"UPDATE batches SET {assignments} WHERE id = ?",  # noqa: S608
       (*columns.values(), batch_id))
    if columns.get("x_job_id"):
        db(workdir, "INSERT OR IGNORE INTO remote_jobs (x_job_id, batch_id, attempt, name,"
           " job_type, created_at) VALUES (?, ?, 1, 'co-test-1', 'tweets', '2026-01-01')",
           (columns["x_job_id"], batch_id))


def daemon(config: Config, rng: random.Random | None = None
           ) -> AbstractAsyncContextManager[Service]:
    """The real daemon in this event loop (optionally with a fixed RNG); stopped at the end."""
    return running_service(config, TOKEN, rng=rng)
