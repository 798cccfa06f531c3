"""Helpers for daemon tests: config files, ID files, waiting on outcomes, the service."""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from orchestrator.clock import Clock
from orchestrator.config import Config, load_config
from orchestrator.core.model import JobType
from orchestrator.daemon.service import Service

TOKEN = "test-bearer-token-0123456789"

FAST_CONFIG = """\
[api]
base_url = "{base_url}"
connect_timeout_s = 5.0
read_timeout_s = 30.0

[paths]
inbox = "inbox"
outbox = "outbox"
state_dir = "state"
create_missing = true

[inbox]
min_age_s = {min_age_s}
rescan_interval_s = 0.5
use_watcher = {use_watcher}
invalid_lines = "{invalid_lines}"

[jobs]
concurrency = "{concurrency}"
max_attempts = {max_attempts}
max_stage_retries = {max_stage_retries}
backoff_initial_s = 0.05
backoff_max_s = 0.5
upload_margin_s = {upload_margin_s}
pack_files = {pack_files}
pack_wait_s = {pack_wait_s}
max_ids_per_job = {max_ids_per_job}
resumable_threshold_bytes = {resumable_threshold_bytes}
upload_chunk_bytes = {upload_chunk_bytes}

[poll]
initial_interval_s = 0.1
max_interval_s = 0.5
backoff_factor = 1.5
rate_reserve = 0

[log]
level = "debug"
format = "json"
"""


def write_config(workdir: Path, base_url: str, **overrides: Any) -> Path:
    values: dict[str, Any] = {
        "base_url": base_url, "min_age_s": 0.05, "use_watcher": "true",
        "invalid_lines": "reject", "concurrency": "global", "max_attempts": 5,
        "max_stage_retries": 10, "upload_margin_s": 1.0, "pack_files": "true", "pack_wait_s": 0.0,
        "max_ids_per_job": 100_000_000, "resumable_threshold_bytes": 64 << 20,
        "upload_chunk_bytes": 256 << 10,
    }
    values.update(overrides)
    path = workdir / "config.toml"
    path.write_text(FAST_CONFIG.format(**values))
    return path


def make_ids(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    return [str(rng.randrange(10**17, 2 * 10**18)) for _ in range(count)]


def drop(workdir: Path, job_type: JobType | str, name: str, lines: list[str] | bytes) -> Path:
    """Write like a well-behaved producer: `.part`, then rename into place."""
    folder = workdir / "inbox" / str(job_type)
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f"{name}.part"
    if isinstance(lines, bytes):
        part.write_bytes(lines)
    else:
        part.write_text("".join(f"{line}\n" for line in lines))
    final = folder / name
    part.rename(final)
    return final


def outcome(workdir: Path, job_type: JobType | str, name: str) -> str | None:
    stem = Path(name).stem
    if (workdir / "outbox" / str(job_type) / f"{stem}.manifest.json").exists():
        return "delivered"
    if (workdir / "outbox" / "rejected" / f"{name}.error.json").exists():
        return "rejected"
    return None


def read_results(workdir: Path, job_type: JobType | str, stem: str) -> dict[str, dict[str, Any]]:
    path = workdir / "outbox" / str(job_type) / f"{stem}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(rows), "blank lines must be dropped"
    by_id = {row["id"]: row for row in rows}
    assert len(by_id) == len(rows), "each affected ID once"
    return by_id


def db_rows(workdir: Path, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    db = workdir / "state" / "state.db"
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    except sqlite3.OperationalError:
        return []  # schema not there yet
    finally:
        conn.close()


async def wait_for(condition: Callable[[], bool], timeout: float = 30.0,
                   what: str = "condition") -> None:
    """Poll a cheap condition until true; fail with `what` after `timeout` seconds."""
    with anyio.move_on_after(timeout):
        while not condition():
            await anyio.sleep(0.02)
        return
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def drained(service: Service, timeout: float = 30.0) -> None:
    """Burst mode: until the queue is drained (`Service.until_idle`: inbox claimed, every input
    and batch final, spool empty); fail after `timeout` seconds."""
    with anyio.move_on_after(timeout):
        await service.until_idle()
        return
    raise AssertionError(f"the queue was not drained after {timeout} s")


@asynccontextmanager
async def running_service(
    config: Config, token: str = TOKEN, *, crash: bool = False, rng: random.Random | None = None,
    clock: Clock | None = None,
) -> AsyncIterator[Service]:
    """The real daemon in this event loop (on `clock`, if given); stopped (like SIGTERM) when
    the block ends. `crash=True` skips the stop grace: steps in flight are cancelled, as a
    kill cuts them."""
    service = Service(config, token, rng=rng, clock=clock)
    async with anyio.create_task_group() as group:
        ready = anyio.Event()

        async def run() -> None:
            await service.run(on_ready=ready.set)

        group.start_soon(run)
        with anyio.fail_after(15):
            await ready.wait()
        try:
            yield service
        finally:
            service.stop()
            if crash:
                service.stop()  # a second stop skips the grace period


def load(path: Path) -> Config:
    return load_config(path)
