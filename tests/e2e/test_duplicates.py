"""The same content dropped twice: `inbox.duplicate_content = "process"` or `"link"`.

"link" gives a later input with the same normalised upload body (CRLF and LF copies match)
and type a copy of the earlier result and a manifest saying where it came from, without a
remote job; it falls back to a normal job when the earlier result left the outbox.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
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

from orchestrator.config import Config
from orchestrator.daemon import dedupe as intake_module
from orchestrator.daemon.service import Service
from orchestrator.files.atomic import atomic_copy_verified, atomic_write_json
from orchestrator.sandbox import Sandbox


def manifest(workdir: Path, job_type: str, stem: str) -> dict[str, Any]:
    return json.loads((workdir / "outbox" / job_type / f"{stem}.manifest.json").read_text())


def results_bytes(workdir: Path, job_type: str, stem: str) -> bytes:
    return (workdir / "outbox" / job_type / f"{stem}.jsonl").read_bytes()


def outbox_names(workdir: Path, job_type: str) -> list[str]:
    return sorted(p.name for p in (workdir / "outbox" / job_type).iterdir())


def spool(workdir: Path) -> list[str]:
    return sorted(p.name for p in (workdir / "state" / "spool").iterdir())


def crlf(ids: list[str]) -> bytes:
    return b"\r\n" + "".join(f" {i}\r\n\r\n" for i in ids).encode()


@pytest.fixture
def link_config(tmp_path: Path, sandbox: Sandbox) -> Config:
    path = write_config(tmp_path, sandbox.base_url)
    text = path.read_text()
    path.write_text(text.replace('invalid_lines = "reject"',
                                 'invalid_lines = "reject"\nduplicate_content = "link"'))
    config = load(path)
    assert config.inbox.duplicate_content == "link"
    return config


async def test_process_mode_runs_the_same_content_again(tmp_path: Path, sandbox: Sandbox) -> None:
    config = load(write_config(tmp_path, sandbox.base_url))
    assert config.inbox.duplicate_content == "process"
    ids = make_ids(80, 40)
    async with running_service(config) as service:
        drop(tmp_path, "tweets", "monday.txt", ids)
        drop(tmp_path, "tweets", "tuesday.txt", crlf(ids))
        await drained(service)
        assert (
            outcome(tmp_path, "tweets", "monday.txt") == "delivered"
            and outcome(tmp_path, "tweets", "tuesday.txt") == "delivered"
        )
    expected = sandbox.expected_results("tweets", ids)
    assert read_results(tmp_path, "tweets", "monday") == expected
    assert read_results(tmp_path, "tweets", "tuesday") == expected
    assert len(sandbox.jobs()) == 2
    assert "linked_to" not in manifest(tmp_path, "tweets", "tuesday")


async def test_link_mode_copies_the_earlier_result_for_a_crlf_copy(
    tmp_path: Path, sandbox: Sandbox, link_config: Config
) -> None:
    ids = make_ids(81, 60)
    async with running_service(link_config) as service:
        drop(tmp_path, "users", "monday.txt", ids)
        await drained(service)
        assert outcome(tmp_path, "users", "monday.txt") == "delivered"
        drop(tmp_path, "users", "tuesday.txt", crlf(ids))
        await drained(service)
        assert outcome(tmp_path, "users", "tuesday.txt") == "delivered"
        other = make_ids(82, 10)
        drop(tmp_path, "users", "different.txt", other)  # not a duplicate: a job of its own
        await drained(service)
        assert outcome(tmp_path, "users", "different.txt") == "delivered"

    assert results_bytes(tmp_path, "users", "tuesday") == results_bytes(tmp_path, "users", "monday")
    assert read_results(tmp_path, "users", "tuesday") == sandbox.expected_results("users", ids)
    first, linked = manifest(tmp_path, "users", "monday"), manifest(tmp_path, "users", "tuesday")
    monday_id = db_rows(tmp_path, "SELECT id FROM inputs WHERE name = 'monday.txt'")[0]["id"]
    assert linked["linked_to"] == {
        "file": "monday.txt", "input_id": monday_id, "results": "monday.jsonl",
        "delivered_at": first["timings"]["delivered_at"], "jobs": first["jobs"],
    }
    assert linked["counts"] == first["counts"]
    assert linked["jobs"] == []
    assert linked["output"]["file"] == "tuesday.jsonl"
    assert linked["output"]["sha256"] == first["output"]["sha256"]
    assert linked["input"]["file"] == "tuesday.txt"
    assert linked["input"]["sha256"] != first["input"]["sha256"]  # raw bytes differ (CRLF)
    assert len(sandbox.jobs()) == 2  # monday and different; tuesday made none
    assert read_results(tmp_path, "users", "different") == sandbox.expected_results("users", other)
    assert spool(tmp_path) == []


async def test_link_mode_waits_for_a_twin_in_flight_instead_of_a_second_job(
    tmp_path: Path, sandbox: Sandbox, link_config: Config
) -> None:
    ids = make_ids(83, 30)
    async with running_service(link_config) as service:
        drop(tmp_path, "tweets", "a.txt", ids)
        drop(tmp_path, "tweets", "b.txt", ids)
        drop(tmp_path, "tweets", "c.txt", crlf(ids))
        drop(tmp_path, "users", "as-users.txt", ids)  # same bytes, other type: not a twin
        await drained(service)
        assert all(outcome(tmp_path, t, n) == "delivered" for t, n in (
            ("tweets", "a.txt"), ("tweets", "b.txt"), ("tweets", "c.txt"),
            ("users", "as-users.txt")))
    expected = sandbox.expected_results("tweets", ids)
    for stem in ("a", "b", "c"):
        assert read_results(tmp_path, "tweets", stem) == expected
    linked = [manifest(tmp_path, "tweets", s).get("linked_to") for s in ("a", "b", "c")]
    assert linked[0] is None and linked[1] is not None and linked[2] is not None
    assert "linked_to" not in manifest(tmp_path, "users", "as-users")
    assert sorted(job["type"] for job in sandbox.jobs()) == ["tweets", "users"]


async def first_then_again(
    workdir: Path, config: Config, ids: list[str], meanwhile: Callable[[Path], None]
) -> list[MutableMapping[str, Any]]:
    """Deliver `first.txt`, hand its result file to `meanwhile` (a consumer), then deliver
    `again.txt` with the same IDs; returns the daemon's log events."""
    with structlog.testing.capture_logs() as logs:
        async with running_service(config) as service:
            drop(workdir, "tweets", "first.txt", ids)
            await drained(service)
            assert outcome(workdir, "tweets", "first.txt") == "delivered"
            meanwhile(workdir / "outbox" / "tweets" / "first.jsonl")
            drop(workdir, "tweets", "again.txt", ids)
            await drained(service)
            assert outcome(workdir, "tweets", "again.txt") == "delivered"
    return logs


async def test_link_mode_processes_again_when_the_earlier_result_was_removed(
    tmp_path: Path, sandbox: Sandbox, link_config: Config
) -> None:
    ids = make_ids(84, 25)

    def consumer_takes_it(first: Path) -> None:
        first.unlink()

    logs = await first_then_again(tmp_path, link_config, ids, consumer_takes_it)
    assert read_results(tmp_path, "tweets", "again") == sandbox.expected_results("tweets", ids)
    assert "linked_to" not in manifest(tmp_path, "tweets", "again")
    assert len(sandbox.jobs()) == 2
    why = [e for e in logs if e["event"] == "input.link_unavailable"]
    assert len(why) == 1 and why[0]["file"] == "again.txt"
    assert why[0]["reasons"] == ["first.txt: first.jsonl was removed from the outbox"]


async def test_link_mode_processes_again_when_the_earlier_result_was_changed(
    tmp_path: Path, sandbox: Sandbox, link_config: Config
) -> None:
    ids = make_ids(85, 25)

    def consumer_edits_it(first: Path) -> None:
        data = bytearray(first.read_bytes())
        data[-2:-1] = b"X"  # same size, other bytes: only the sha256 can tell
        first.write_bytes(bytes(data))

    logs = await first_then_again(tmp_path, link_config, ids, consumer_edits_it)
    why = [e for e in logs if e["event"] == "input.link_unavailable"]
    assert [e["reasons"] for e in why] == [
        ["first.txt: first.jsonl was changed or removed from the outbox"]]
    assert read_results(tmp_path, "tweets", "again") == sandbox.expected_results("tweets", ids)
    assert "linked_to" not in manifest(tmp_path, "tweets", "again")
    assert len(sandbox.jobs()) == 2


# Stop the daemon mid-link (after the intent was persisted), optionally let a consumer take
# the earlier result meanwhile, restart: exactly one result for the copy, never two.
CRASH_POINTS = ["before-copy", "before-manifest", "before-marked-delivered"]


@pytest.mark.parametrize("consumer_took_earlier", [False, True], ids=["kept", "taken"])
@pytest.mark.parametrize("point", CRASH_POINTS)
async def test_a_stop_mid_link_ends_with_exactly_one_result(
    tmp_path: Path, sandbox: Sandbox, link_config: Config, monkeypatch: pytest.MonkeyPatch,
    point: str, consumer_took_earlier: bool,
) -> None:
    ids = make_ids(86, 40)
    async with running_service(link_config) as service:
        drop(tmp_path, "tweets", "first.txt", ids)
        await drained(service)
        assert outcome(tmp_path, "tweets", "first.txt") == "delivered"

    service = Service(link_config, TOKEN)
    tripped = anyio.Event()

    def trip_around(module: Any, name: str) -> None:
        real = getattr(module, name)

        def tripping(*args: Any, **kwargs: Any) -> Any:
            if point == "before-marked-delivered":
                real(*args, **kwargs)  # the manifest is written; the database not yet told
            tripped.set()
            service.stop()
            raise _Killed

        monkeypatch.setattr(module, name, tripping)

    if point == "before-copy":
        trip_around(intake_module, "atomic_copy_verified")
    else:
        trip_around(intake_module, "atomic_write_json")

    with pytest.raises(BaseExceptionGroup) as died:
        async with anyio.create_task_group() as group:
            group.start_soon(service.run)
            drop(tmp_path, "tweets", "second.txt", crlf(ids))
            with anyio.fail_after(30):
                await tripped.wait()
    assert died.group_contains(_Killed)
    monkeypatch.setattr(intake_module, "atomic_copy_verified", atomic_copy_verified)
    monkeypatch.setattr(intake_module, "atomic_write_json", atomic_write_json)
    state = db_rows(tmp_path, "SELECT state, report_json FROM inputs WHERE name='second.txt'")
    assert state[0]["state"] == "claimed" and "link" in json.loads(state[0]["report_json"])
    if consumer_took_earlier:
        for name in ("first.jsonl", "first.manifest.json"):
            (tmp_path / "outbox" / "tweets" / name).unlink()

    async with running_service(link_config) as service:
        await drained(service)
        assert outcome(tmp_path, "tweets", "second.txt") == "delivered" and spool(tmp_path) == []

    assert read_results(tmp_path, "tweets", "second") == sandbox.expected_results("tweets", ids)
    names = outbox_names(tmp_path, "tweets")
    assert [n for n in names if n.startswith("second")] == ["second.jsonl",
                                                            "second.manifest.json"]
    assert not [n for n in names if n.startswith(".")], "no temp files left"
    relinked = "linked_to" in manifest(tmp_path, "tweets", "second")
    # Only a crash before the copy, with the earlier result gone, costs a new job.
    needs_job = consumer_took_earlier and point == "before-copy"
    assert relinked is not needs_job
    assert len(sandbox.jobs()) == (2 if needs_job else 1)
    assert [r["state"] for r in db_rows(tmp_path, "SELECT state FROM inputs")] == [
        "delivered", "delivered"]


class _Killed(BaseException):
    """Stands in for the process dying at that line (not caught by `except Exception`)."""


async def test_link_waits_while_the_outbox_is_not_writable_then_links(
    tmp_path: Path, sandbox: Sandbox, link_config: Config
) -> None:
    out = tmp_path / "outbox" / "tweets"
    ids = make_ids(87, 20)
    with structlog.testing.capture_logs() as logs:
        async with running_service(link_config) as service:
            drop(tmp_path, "tweets", "first.txt", ids)
            await drained(service)
            assert outcome(tmp_path, "tweets", "first.txt") == "delivered"
            try:
                subprocess.run(["chattr", "+i", str(out)], check=True, capture_output=True)
            except (OSError, subprocess.CalledProcessError) as exc:
                pytest.skip(f"chattr +i is not available here: {exc}")
            try:
                drop(tmp_path, "tweets", "second.txt", ids)
                await wait_for(lambda: len([e for e in logs if e["event"]
                                            == "outbox.link_deferred"]) >= 3, what="retries")
                assert outcome(tmp_path, "tweets", "second.txt") is None
            finally:
                subprocess.run(["chattr", "-i", str(out)], check=True, capture_output=True)
            await drained(service)
            assert outcome(tmp_path, "tweets", "second.txt") == "delivered"
    assert manifest(tmp_path, "tweets", "second")["linked_to"]["file"] == "first.txt"
    assert len(sandbox.jobs()) == 1
    deferred = [e for e in logs if e["event"] == "outbox.link_deferred"]
    assert [e["log_level"] for e in deferred].count("warning") == 1


async def test_link_mode_does_not_reuse_a_result_older_than_link_max_age(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    path = write_config(tmp_path, sandbox.base_url)
    path.write_text(path.read_text().replace(
        'invalid_lines = "reject"',
        'invalid_lines = "reject"\nduplicate_content = "link"\nlink_max_age_s = 0.0'))
    config = load(path)
    ids = make_ids(83, 30)
    async with running_service(config) as service:
        drop(tmp_path, "tweets", "old.txt", ids)
        await drained(service)
        assert outcome(tmp_path, "tweets", "old.txt") == "delivered"
        drop(tmp_path, "tweets", "again.txt", ids)
        await drained(service)
        assert outcome(tmp_path, "tweets", "again.txt") == "delivered"
    assert "linked_to" not in manifest(tmp_path, "tweets", "again")
    assert len(sandbox.jobs()) == 2  # the stale result was not reused: a fresh job ran
    assert read_results(tmp_path, "tweets", "again") == sandbox.expected_results("tweets", ids)
