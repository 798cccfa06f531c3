"""Disk full for real: the spool (and the state database) on a small filesystem of its own.

Every claim from the inbox (another filesystem) is a copy. A file that does not fit must wait
with one warning, not be copied, undone and copied again on every rescan (that starved
state.db with SQLITE_FULL); the database keeps working for other files; once space is freed
the file is claimed and delivered.

The small filesystem is a 8 MiB tmpfs mounted by the test (we run as root). If the mount is
refused, those tests skip with the reason, and the fault-seam tests at the end (ENOSPC
raised at the file layer, with the inbox made "another filesystem" by an EXDEV rename) still
run everywhere.
"""

from __future__ import annotations

import errno
import json
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog
from clocks import FakeClock
from daemon_helpers import (
    drop,
    load,
    make_ids,
    outcome,
    read_results,
    running_service,
    wait_for,
    write_config,
)

from orchestrator.config import Config
from orchestrator.core.model import InputState, JobType
from orchestrator.daemon import intake as intake_module
from orchestrator.daemon.intake import Intake
from orchestrator.files import atomic as atomic_module
from orchestrator.files import claim as claim_module
from orchestrator.files.inbox import Candidate
from orchestrator.layout import Layout
from orchestrator.sandbox import Sandbox
from orchestrator.store.sqlite import Store

MIB = 1024 * 1024


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or done.returncode});"
                    " the fault-seam tests below cover the same paths")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def ids_text(seed: int, count: int) -> bytes:
    return "".join(f"{i}\n" for i in make_ids(seed, count)).encode()


def ballast(folder: Path, size: int) -> Path:
    path = folder / "ballast"
    with open(path, "wb") as f:
        f.write(b"\0" * size)  # written, not sparse: tmpfs counts it
    return path


def config_on(tmp_path: Path, base_url: str, state_dir: Path, min_free: int) -> Config:
    path = write_config(tmp_path, base_url)
    text = path.read_text().replace('state_dir = "state"', f'state_dir = "{state_dir}"')
    text = text.replace("[inbox]\n", f"[inbox]\nmin_free_bytes = {min_free}\n")
    path.write_text(text)
    return load(path)


def count_calls(monkeypatch: pytest.MonkeyPatch, module: Any, name: str,
                wanted: str) -> list[str]:
    """Wrap module.name; record the calls whose first argument's file name is `wanted`."""
    calls: list[str] = []
    real = getattr(module, name)

    def counting(*args: Any, **kwargs: Any) -> Any:
        first = args[0]
        path = getattr(first, "path", first)
        if Path(path).name == wanted:
            calls.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counting)
    return calls


async def test_a_file_that_does_not_fit_waits_without_copying_and_goes_once_space_is_freed(
    tmp_path: Path, sandbox: Sandbox, small_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = small_fs / "state"
    config = config_on(tmp_path, sandbox.base_url, state, min_free=2 * MIB)
    weight = ballast(small_fs, 5 * MIB)
    big = ids_text(601, 75_000)  # ~1.5 MiB: 1.5 + 2 MiB spare > ~3 MiB free
    copies = count_calls(monkeypatch, claim_module, "copy_into_spool", "big.txt")
    checks = count_calls(monkeypatch, intake_module, "check_room", "big.txt")
    with structlog.testing.capture_logs() as logs:
        async with running_service(config):
            drop(tmp_path, "tweets", "big.txt", big)
            await wait_for(lambda: len(checks) >= 6, what="six rescans of big.txt")
            assert copies == []  # not a single copy started, let alone a loop of them
            assert (tmp_path / "inbox" / "tweets" / "big.txt").read_bytes() == big

            # The database and the daemon keep working for files that fit.
            small_ids = make_ids(602, 20)
            drop(tmp_path, "tweets", "small.txt", small_ids)
            await wait_for(lambda: outcome(tmp_path, "tweets", "small.txt") == "delivered")
            assert read_results(tmp_path, "tweets", "small") == sandbox.expected_results(
                "tweets", small_ids)
            assert copies == []

            weight.unlink()  # the operator frees space
            await wait_for(lambda: outcome(tmp_path, "tweets", "big.txt") == "delivered",
                           timeout=60, what="big.txt delivered once space was freed")
    assert len(copies) == 1
    waiting = [e for e in logs if e["event"] == "inbox.claim_waiting_for_space"]
    assert [e["log_level"] for e in waiting].count("warning") == 1  # said once
    assert waiting[0]["file"] == "big.txt" and waiting[0]["bytes"] == len(big)
    assert any(e["event"] == "inbox.claim_space_available" for e in logs)
    rows = db_rows_at(state, "SELECT name, state FROM inputs ORDER BY id")
    assert rows == [{"name": "small.txt", "state": "delivered"},
                    {"name": "big.txt", "state": "delivered"}]


def db_rows_at(state: Path, sql: str) -> list[dict[str, Any]]:
    """Rows of the state database on the small filesystem."""
    conn = sqlite3.connect(f"file:{state / 'state.db'}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql)]
    finally:
        conn.close()


# --- a copy that fails half-way (the free-space estimate was wrong): backoff ---------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def _intake(inbox: Path, state: Path, clock: FakeClock, **options: Any
                  ) -> tuple[Intake, Store]:
    layout = Layout(inbox.parent, inbox.parent.parent / "outbox", state)
    layout.ensure()
    inbox.mkdir(parents=True, exist_ok=True)
    store = await Store.open(layout.db_path, clock)
    return Intake(store, layout, **options), store


def _candidate(path: Path) -> Candidate:
    st = path.stat()
    return Candidate(path, JobType.TWEETS, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


async def _claims_back_off_then_resume(
    intake: Intake, store: Store, clock: FakeClock, path: Path, copies: list[str],
    free_space: Any,
) -> None:
    for _ in range(5):  # five rescans in a row: one copy attempt, then waiting
        assert await intake.claim(_candidate(path)) is None
        clock.advance(1.0)
    assert copies == ["copy_into_spool"]
    assert path.exists()  # nothing lost
    assert [p.name for p in intake.layout.spool.iterdir()] == []  # the partial copy is gone
    assert await store.inputs_in(list(InputState)) == []  # no stray claiming rows
    clock.advance(intake.backoff.initial_s)
    assert await intake.claim(_candidate(path)) is None  # due again: a second try, fails
    assert copies == ["copy_into_spool"] * 2
    clock.advance(intake.backoff.initial_s)  # backoff doubled: not yet
    assert await intake.claim(_candidate(path)) is None
    assert len(copies) == 2
    free_space()
    clock.advance(intake.backoff.initial_s)
    claimed = await intake.claim(_candidate(path))
    assert claimed is not None and not path.exists()
    item = await store.get_input(claimed.id)
    assert item is not None and item.state is InputState.QUEUED


async def test_a_copy_that_hits_a_real_enospc_backs_off_and_resumes(
    tmp_path: Path, small_fs: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox = tmp_path / "inbox" / "tweets"
    intake, store = await _intake(inbox, small_fs / "state", clock, min_free_bytes=0)
    try:
        weight = ballast(small_fs, 6 * MIB)
        path = inbox / "big.txt"
        path.write_bytes(ids_text(603, 120_000))  # ~2.4 MiB > what is left
        # statvfs says "plenty" (a filesystem that lies, or space taken since): the copy
        # starts and fails with a real ENOSPC from the kernel.
        monkeypatch.setattr(atomic_module, "free_bytes", lambda folder: 1 << 40)
        copies = count_calls(monkeypatch, claim_module, "copy_into_spool", "big.txt")
        with structlog.testing.capture_logs() as logs:
            await _claims_back_off_then_resume(intake, store, clock, path, copies,
                                               weight.unlink)
        deferred = [e for e in logs if e["event"] == "inbox.claim_deferred"]
        assert [e["log_level"] for e in deferred] == ["warning", "debug"]
        assert deferred[0]["error"] == "OSError" and deferred[0]["retry_in_s"] == 30.0
    finally:
        await store.close()


async def test_fault_seam_enospc_during_the_copy_backs_off_and_resumes(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same without a mount: a fault seam at the file layer raises ENOSPC inside the copy
    (after some bytes went to the temp file), and renames out of the inbox fail with EXDEV as
    they do between two filesystems."""
    inbox = tmp_path / "inbox" / "tweets"
    intake, store = await _intake(inbox, tmp_path / "state", clock)
    real_rename, real_output = Path.rename, claim_module.atomic_output
    full = [True]

    def cross_device(self: Path, target: Any) -> Any:
        if self.parent == inbox:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_rename(self, target)

    class FullDisk:
        def __init__(self, out: Any) -> None:
            self._out = out

        def write(self, block: bytes) -> int:
            self._out.write(block[:100])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name: str) -> Any:
            return getattr(self._out, name)

    @contextmanager
    def output(dest: Path) -> Any:
        with real_output(dest) as out:
            yield FullDisk(out) if full[0] else out

    monkeypatch.setattr(Path, "rename", cross_device)
    monkeypatch.setattr(claim_module, "atomic_output", output)
    copies = count_calls(monkeypatch, claim_module, "copy_into_spool", "f.txt")
    path = inbox / "f.txt"
    path.write_bytes(ids_text(604, 50))
    try:
        await _claims_back_off_then_resume(intake, store, clock, path, copies,
                                           lambda: full.__setitem__(0, False))
    finally:
        await store.close()


async def test_a_file_over_max_input_bytes_is_rejected_without_a_copy(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox = tmp_path / "inbox" / "tweets"
    intake, store = await _intake(inbox, tmp_path / "state", clock, max_input_bytes=1000)
    copies = count_calls(monkeypatch, claim_module, "copy_into_spool", "huge.txt")
    path = inbox / "huge.txt"
    path.write_bytes(ids_text(605, 100))
    try:
        assert await intake.claim(_candidate(path)) is None
        rejected = tmp_path / "outbox" / "rejected"
        assert (rejected / "huge.txt").read_bytes() == ids_text(605, 100)
        record = json.loads((rejected / "huge.txt.error.json").read_text())
        assert record["reason"] == "too_large"
        size = len(ids_text(605, 100))
        assert f"{size} bytes" in record["message"]
        assert "inbox.max_input_bytes (1000)" in record["message"]
        assert copies == [] and await store.inputs_in(list(InputState)) == []
    finally:
        await store.close()
