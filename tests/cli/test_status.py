"""`status` reads at a glance and agrees with `jobs`: files as lists, one timestamp format
(RFC 3339 UTC, `Z`), human deadlines, reason codes with their sentence, no internal stems,
repeated retries collapsed, `--files` listing the queued names."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from admin_helpers import db, layout_of, make_batch, offline_config, run_cli, set_batch

from orchestrator.cli.status import collapse_repeats
from orchestrator.clock import SystemClock, human_duration, rfc3339
from orchestrator.store.sqlite import Store

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def add_event(workdir: Path, kind: str, at: str, batch_id: int | None,
              input_id: int | None, **detail: object) -> None:
    db(workdir, "INSERT INTO events (at, batch_id, input_id, kind, detail_json)"
       " VALUES (?, ?, ?, ?, ?)", (at, batch_id, input_id, kind, json.dumps(detail)))


def test_human_duration_reads_like_a_deadline() -> None:
    assert human_duration(604793) == "6d 23h"
    assert human_duration(3 * 3600 + 5 * 60 + 9) == "3h 05m"
    assert human_duration(754) == "12m 34s"
    assert human_duration(42) == "42s"
    assert human_duration(-300) == "overdue 5m 00s"


def test_rfc3339_is_one_format_for_old_and_new_records() -> None:
    assert rfc3339("2026-12-02T04:50:00.123456+00:00") == "2026-12-02T04:50:00Z"
    assert rfc3339("2026-12-02T04:50:00.123Z") == "2026-12-02T04:50:00Z"
    assert rfc3339(datetime(2026, 12, 2, 5, 50, tzinfo=UTC).astimezone()) == (
        "2026-12-02T05:50:00Z")
    assert rfc3339(None) is None


async def test_status_json_files_are_a_list_as_in_jobs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    await make_batch(tmp_path, name="a, b.txt")  # a comma in a name: a joined string would lie
    status = run_cli(capsys, "status", "--config", config, "--json")
    jobs = run_cli(capsys, "jobs", "--config", config, "--json")
    assert status.code == jobs.code == 0, status.err + jobs.err
    assert status.json["current"][0]["files"] == ["a, b.txt"] == jobs.json["jobs"][0]["files"]
    assert RFC3339.match(status.json["current"][0]["created_at"])
    assert RFC3339.match(jobs.json["jobs"][0]["started_at"])


async def test_status_shows_deadlines_as_durations_and_rfc3339_times(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    batch_id = await make_batch(tmp_path)
    expires = datetime.now(UTC) + timedelta(days=7, seconds=-10)
    set_batch(tmp_path, batch_id, state="waiting", x_job_id="77", attempt=1,
              download_expires_at=expires.isoformat(timespec="microseconds"))
    status = run_cli(capsys, "status", "--config", config)
    assert status.code == 0, status.err
    assert "results must be downloaded within 6d 23h" in status.out
    assert f"(by {rfc3339(expires)})" in status.out
    assert " s\n" not in status.out and "604" not in status.out
    as_json = run_cli(capsys, "status", "--config", config, "--json").json
    current = as_json["current"][0]
    assert current["download_expires_in"] == "6d 23h"
    assert 604_700 < current["download_expires_in_s"] <= 604_790  # the number stays for scripts
    assert RFC3339.match(current["download_expires_at"])


async def test_rejected_outcome_shows_code_and_message_but_no_internal_stem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    await make_batch(tmp_path, name="export.txt")
    db(tmp_path, "UPDATE inputs SET state = 'rejected', out_stem = 'export#rejected-5',"
       " finished_at = '2026-01-01T00:00:00.000001+00:00', error_json = json_object("
       "'reason', 'invalid_lines', 'message', 'export.txt: 2 lines are not IDs')")
    status = run_cli(capsys, "status", "--config", config)
    assert status.code == 0, status.err
    assert ("2026-01-01T00:00:00Z  tweets export.txt: rejected"
            " (invalid_lines: 2 lines are not IDs)") in status.out  # the name said once
    assert "#rejected" not in status.out
    recent = run_cli(capsys, "status", "--config", config, "--json").json["recent"][0]
    assert recent["reason"] == "invalid_lines"
    assert recent["message"] == "export.txt: 2 lines are not IDs"
    assert recent["out_stem"] is None and recent["finished_at"] == "2026-01-01T00:00:00Z"


async def test_recent_problems_collapse_repeats_and_never_say_batch_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    batch_id = await make_batch(tmp_path)
    for attempt in (1, 2, 3):
        add_event(tmp_path, "step.retry", f"2026-01-01T00:0{attempt}:00.000000+00:00",
                  batch_id, None, error="ServerError", attempt=attempt, retry_in_s=attempt * 2.0)
    add_event(tmp_path, "input.rejected", "2026-01-01T00:05:00.000000+00:00", None, 1,
              reason="empty")
    status = run_cli(capsys, "status", "--config", config)
    assert status.code == 0, status.err
    problems = status.out.split("recent problems:\n", 1)[1].splitlines()
    # The rejection is in "recent outcomes" already; the retries are said once, in words.
    assert problems == ["  2026-01-01T00:03:00Z  step.retry  batch 1  ServerError"
                        "  x3 since 2026-01-01T00:01:00Z"], problems
    assert "batch None" not in status.out


def test_collapse_keeps_different_problems_apart() -> None:
    def event(at: str, error: str) -> dict[str, object]:
        return {"at": at, "kind": "step.retry", "batch_id": 1, "input_id": None,
                "detail": {"error": error, "attempt": 1}}

    rows = collapse_repeats([event("3", "A"), event("2", "B"), event("1", "A")])
    assert [r["count"] for r in rows] == [1, 1, 1]


async def test_status_files_lists_queued_names_escaped_and_exact_in_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    await make_batch(tmp_path, name="in-a-job.txt")
    db(tmp_path, "INSERT INTO inputs (job_type, name, out_stem, state, spool_name, inode,"
       " size_bytes, id_count, claimed_at, queued_at) VALUES ('users', 'wait\x1b[2J.txt',"
       " 'wait', 'queued', 's2', 2, 4, 2, '2026-01-01T00:00:00+00:00',"
       " '2026-01-01T00:00:01.5+00:00')")
    text = run_cli(capsys, "status", "--config", config, "--files")
    assert text.code == 0, text.err
    listing = text.out.split("queued files (not yet in a job):\n", 1)[1]
    assert listing.startswith("  2026-01-01T00:00:01Z  users  wait\\x1b[2J.txt  (2 IDs, queued)")
    assert "in-a-job.txt" not in listing.split("current jobs:")[0]
    exact = run_cli(capsys, "status", "--config", config, "--files", "--json").json
    assert [f["name"] for f in exact["queued_files"]] == ["wait\x1b[2J.txt"]
    assert "queued_files" not in run_cli(capsys, "status", "--config", config, "--json").json


async def test_status_shows_the_leader_the_standbys_and_each_hosts_heartbeat(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = offline_config(tmp_path)
    await make_batch(tmp_path)
    before = run_cli(capsys, "status", "--config", config, "--json")
    assert before.json["cluster"] == {"leader": None, "epoch": 0, "lease_age_s": None,
                                      "lease_expires_in_s": None, "standbys": [], "hosts": []}
    assert "cluster:" not in run_cli(capsys, "status", "--config", config).out
    store = await Store.open(layout_of(tmp_path).db_path, SystemClock(), host_id="node-a")
    try:
        await store.heartbeat("node-a", "leader", 101, "1.0")
        await store.heartbeat("node-b", "standby", 202, "1.0")
        assert await store.acquire_lease("node-a", 30.0) == 1
    finally:
        await store.close()
    status = run_cli(capsys, "status", "--config", config, "--json")
    cluster = status.json["cluster"]
    assert (cluster["leader"], cluster["epoch"], cluster["standbys"]) == ("node-a", 1, ["node-b"])
    assert 0 <= cluster["lease_age_s"] < 30 and 0 < cluster["lease_expires_in_s"] <= 30
    assert [(h["host_id"], h["role"], h["pid"]) for h in cluster["hosts"]] == [
        ("node-a", "leader", 101), ("node-b", "standby", 202)]
    assert all(RFC3339.match(h["last_seen"]) for h in cluster["hosts"])
    text = run_cli(capsys, "status", "--config", config).out
    assert "cluster: leader node-a (epoch 1, lease renewed" in text
    assert "  standbys: node-b" in text
    assert re.search(r"host node-b: standby, pid 202, version 1.0, last heartbeat \d+s ago", text)
