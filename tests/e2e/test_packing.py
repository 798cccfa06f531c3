"""Packing small files into one job, splitting huge ones, and restarts in the middle of both.

The sandbox's ground truth says what one job per file would have produced; every output
must equal it exactly, however the files were combined or cut.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from daemon_helpers import (
    TOKEN,
    db_rows,
    drained,
    drop,
    load,
    make_ids,
    outcome,
    read_results,
    running_service,
    wait_for,
    write_config,
)

from orchestrator.daemon.service import Service
from orchestrator.sandbox import Sandbox
from orchestrator.store.sqlite import Store


def manifest(workdir: Path, job_type: str, stem: str) -> dict[str, Any]:
    return json.loads((workdir / "outbox" / job_type / f"{stem}.manifest.json").read_text())


async def test_many_small_files_share_few_jobs_and_split_back_exactly(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config = load(write_config(tmp_path, sandbox.base_url, pack_wait_s=1.0))
    shared = make_ids(999, 5)  # these IDs are in every tweets file
    files: dict[str, tuple[str, list[str]]] = {}
    for n in range(24):
        job_type = "users" if n % 3 == 0 else "tweets"
        ids = make_ids(100 + n, 40) + (shared if job_type == "tweets" else [])
        files[f"small-{n:02}.txt"] = (job_type, ids)
    async with running_service(config):
        for name, (job_type, ids) in files.items():
            drop(tmp_path, job_type, name, ids)
        await wait_for(lambda: all(outcome(tmp_path, t, n) == "delivered"
                                   for n, (t, _) in files.items())
                       and not list((tmp_path / "state" / "spool").iterdir()), timeout=60,
                       what="24 results and a clean spool")
    jobs = sandbox.jobs()
    assert len(jobs) <= 6, f"24 files should share a few jobs, got {len(jobs)}"
    for name, (job_type, ids) in files.items():
        stem = Path(name).stem
        assert read_results(tmp_path, job_type, stem) == sandbox.expected_results(job_type, ids)
        info = manifest(tmp_path, job_type, stem)
        assert info["counts"]["submitted"] == len(ids)
        assert info["jobs"][0]["shared_by_inputs"] >= 1
    # A job was really shared, and its manifests name it.
    assert any(manifest(tmp_path, "tweets", Path(n).stem)["jobs"][0]["shared_by_inputs"] > 1
               for n, (t, _) in files.items() if t == "tweets")
    # The shared IDs that need action appear in every tweets output.
    affected_shared = set(sandbox.expected_results("tweets", shared))
    for name, (job_type, _) in files.items():
        if job_type == "tweets":
            assert affected_shared <= set(read_results(tmp_path, "tweets", Path(name).stem))
    assert not list((tmp_path / "state" / "spool").iterdir())


async def test_packing_disabled_runs_one_job_per_file(tmp_path: Path, sandbox: Sandbox) -> None:
    config = load(write_config(tmp_path, sandbox.base_url, pack_files="false", pack_wait_s=1.0))
    async with running_service(config) as service:
        for n in range(5):
            drop(tmp_path, "tweets", f"f{n}.txt", make_ids(n, 10))
        await drained(service)
        assert all(outcome(tmp_path, "tweets", f"f{n}.txt") for n in range(5))
    assert len(sandbox.jobs()) == 5


async def test_a_file_above_the_limit_runs_as_parts_and_is_written_once(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config = load(write_config(tmp_path, sandbox.base_url, max_ids_per_job=100))
    ids = make_ids(5, 350)
    async with running_service(config):
        drop(tmp_path, "users", "huge.txt", ids)
        await wait_for(lambda: outcome(tmp_path, "users", "huge.txt") == "delivered"
                       and not list((tmp_path / "state" / "spool").iterdir()), timeout=60)
    jobs = sandbox.jobs()
    assert len(jobs) == 4
    assert [job["uploaded_ids"] for job in jobs] == [100, 100, 100, 50] or sorted(
        job["uploaded_ids"] for job in jobs) == [50, 100, 100, 100]
    assert read_results(tmp_path, "users", "huge") == sandbox.expected_results("users", ids)
    info = manifest(tmp_path, "users", "huge")
    assert info["batch"]["parts"] == 4 and len(info["jobs"]) == 4
    assert info["counts"]["submitted"] == 350
    assert sorted(p.name for p in (tmp_path / "outbox" / "users").iterdir()) == [
        "huge.jsonl", "huge.manifest.json"]
    assert not list((tmp_path / "state" / "spool").iterdir())


async def test_a_split_file_and_small_files_keep_fifo_order(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config = load(write_config(tmp_path, sandbox.base_url, max_ids_per_job=60))
    big, small = make_ids(8, 150), make_ids(9, 20)
    async with running_service(config):
        drop(tmp_path, "tweets", "big.txt", big)
        await wait_for(lambda: bool(db_rows(tmp_path, "SELECT id FROM batches")))
        drop(tmp_path, "tweets", "small.txt", small)
        await wait_for(lambda: outcome(tmp_path, "tweets", "big.txt") == "delivered"
                       and outcome(tmp_path, "tweets", "small.txt") == "delivered", timeout=60)
    assert read_results(tmp_path, "tweets", "big") == sandbox.expected_results("tweets", big)
    assert read_results(tmp_path, "tweets", "small") == sandbox.expected_results("tweets", small)
    finished = [r["finished_at"] for r in db_rows(
        tmp_path, "SELECT name, finished_at FROM inputs ORDER BY id")]
    assert finished == sorted(finished), "the big file, queued first, finishes first"


@pytest.mark.parametrize("stop_after_parts", [1, 2])
async def test_restart_between_parts_of_a_split_file(
    tmp_path: Path, sandbox: Sandbox, stop_after_parts: int
) -> None:
    config = load(write_config(tmp_path, sandbox.base_url, max_ids_per_job=50))
    ids = make_ids(12, 140)
    async with running_service(config):
        drop(tmp_path, "tweets", "parts.txt", ids)
        await wait_for(lambda: len(db_rows(
            tmp_path, "SELECT id FROM batches WHERE state = 'done'")) >= stop_after_parts,
            timeout=60)
    async with running_service(config):
        await wait_for(lambda: outcome(tmp_path, "tweets", "parts.txt") == "delivered",
                       timeout=60)
    assert read_results(tmp_path, "tweets", "parts") == sandbox.expected_results("tweets", ids)
    assert len(sandbox.jobs()) == 3
    assert len(manifest(tmp_path, "tweets", "parts")["jobs"]) == 3


async def test_crash_in_the_middle_of_splitting_results_yields_one_result_each(
    tmp_path: Path, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Die after the packed batch's results were split for some inputs but not all."""
    config = load(write_config(tmp_path, sandbox.base_url, pack_wait_s=1.0))
    files = {f"p{n}.txt": make_ids(300 + n, 30) for n in range(6)}
    service = Service(config, TOKEN, stop_grace_s=0)
    tripped = anyio.Event()
    real = Store.mark_delivered
    calls = 0

    async def dying(self: Store, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        await real(self, *args, **kwargs)
        calls += 1
        if calls == 2:  # two inputs written to the outbox and recorded, then the lights go out
            tripped.set()
            service.stop()
            await anyio.sleep_forever()

    # The store is the seam: every delivered input is recorded there right after its files.
    monkeypatch.setattr(Store, "mark_delivered", dying)
    async with anyio.create_task_group() as group:
        group.start_soon(service.run)
        for name, ids in files.items():
            drop(tmp_path, "users", name, ids)
        with anyio.fail_after(30):
            await tripped.wait()
    monkeypatch.undo()
    users_out = tmp_path / "outbox" / "users"
    before = {p.name: p.stat().st_ino for p in users_out.iterdir()}
    assert len(before) == 4  # two inputs were delivered before the crash
    taken = sorted(n for n in before if n.endswith(".manifest.json"))[0].split(".")[0]
    for suffix in (".jsonl", ".manifest.json"):  # a consumer takes one result set away
        (users_out / f"{taken}{suffix}").unlink()
        del before[f"{taken}{suffix}"]
    async with running_service(config):
        await wait_for(lambda: all(outcome(tmp_path, "users", n) == "delivered"
                                   for n in files if not n.startswith(taken))
                       and {r["state"] for r in db_rows(tmp_path, "SELECT state FROM inputs")}
                       == {"delivered"}, timeout=60)
    for name, ids in files.items():
        if (users_out / f"{Path(name).stem}.jsonl").exists():
            assert read_results(tmp_path, "users", Path(name).stem) == (
                sandbox.expected_results("users", ids))
    after = {p.name: p.stat().st_ino for p in users_out.iterdir()}
    # Delivered once: what was there was not rewritten, what was taken did not come back.
    assert all(after[name] == inode for name, inode in before.items())
    assert len(after) == 2 * len(files) - 2
    assert len(sandbox.jobs()) == len({r["x_job_id"] for r in db_rows(
        tmp_path, "SELECT x_job_id FROM remote_jobs")})


async def test_membership_split_keeps_memory_off_the_python_heap(tmp_path: Path) -> None:
    """Results split per input through a scratch SQLite file, not a dict of every ID."""
    import tracemalloc

    from orchestrator.files.batchfiles import Slice, split_results
    from orchestrator.store.scratch import ResultIndex

    ids_path = tmp_path / "a.ids"
    ids_path.write_bytes(b"".join(f"{1000000 + n}\n".encode() for n in range(200_000)))
    results = tmp_path / "results.jsonl"
    results.write_bytes(b"".join(
        json.dumps({"id": str(1000000 + n), "action": "delete", "reason": "deleted"}).encode()
        + b"\n" for n in range(0, 200_000, 7)))
    tracemalloc.start()
    counts = split_results(results, [(Slice(ids_path, 0, 100_000), tmp_path / "one.jsonl"),
                                     (Slice(ids_path, 50_000, -1), tmp_path / "two.jsonl")],
                           ResultIndex(tmp_path / "scratch.db"))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert counts[0].affected == len(range(0, 100_000, 7))
    assert counts[1].affected == len(range(50_001, 200_000, 7)) + (1 if 50_000 % 7 == 0 else 0)
    assert peak < 20 << 20, f"peak Python allocation {peak / 1e6:.1f} MB"


async def test_startup_sweeps_spool_files_nobody_refers_to(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config = load(write_config(tmp_path, sandbox.base_url))
    ids = make_ids(21, 30)
    async with running_service(config) as service:
        drop(tmp_path, "tweets", "first.txt", ids)
        await drained(service)
        assert (
            outcome(tmp_path, "tweets", "first.txt") == "delivered"
            and not list((tmp_path / "state" / "spool").iterdir())
        )
    spool = tmp_path / "state" / "spool"
    # What a crash between "batch done" and its cleanup leaves behind:
    for leftover in ("batch-1.results.jsonl", "0123456789abcdef.tweets.part-0.results.jsonl",
                     "0123456789abcdef.tweets.pack.ids"):
        (spool / leftover).write_text("{}\n")
    async with running_service(config) as service:
        drop(tmp_path, "users", "second.txt", make_ids(22, 10))
        await drained(service)
        assert outcome(tmp_path, "users", "second.txt") == "delivered"
        assert not list(spool.iterdir()), "a clean spool"
    assert read_results(tmp_path, "tweets", "first") == sandbox.expected_results("tweets", ids)
