"""Issue point 7: result files like the real ones, and the ground truth behind them."""

from __future__ import annotations

import re

import aiohttp
from hypothesis import given, settings
from hypothesis import strategies as st
from sandbox_helpers import create_job, download, ids_body, parse_results, tweet_ids, upload
from sandbox_recorded import TWEET_ROW, USER_ROW_DELETED, USER_ROW_SUSPENDED

from orchestrator.sandbox import expected_result, iter_expected

TWEET_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
USER_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+00:00$")
DOCUMENTED = {
    "tweets": {"deleted", "deactivated", "scrub_geo", "protected", "suspended"},
    "users": {"deleted", "deactivated", "protected", "suspended"},
}
ROW_KEYS = set(USER_ROW_DELETED)  # id, action, created_at, redacted_at, reason


def check_row(job_type: str, row: dict[str, str], reasons: set[str]) -> None:
    assert set(row) in (ROW_KEYS, ROW_KEYS - {"redacted_at"})
    assert list(row)[:3] == ["id", "action", "created_at"] and list(row)[-1] == "reason"
    assert row["action"] == "delete"
    assert row["reason"] in reasons
    pattern = TWEET_TIME if job_type == "tweets" else USER_TIME
    assert pattern.match(row["created_at"]), row
    if "redacted_at" in row:
        assert pattern.match(row["redacted_at"]), row
        assert row["redacted_at"] > row["created_at"]
    if row["reason"] == "suspended":
        assert "redacted_at" not in row  # as recorded for suspended rows


def test_recorded_ids_get_their_recorded_creation_times() -> None:
    """created_at comes from the snowflake ID, so it matches the real rows exactly."""
    for job_type, recorded in (
        ("tweets", TWEET_ROW),
        ("users", USER_ROW_DELETED),
        ("users", USER_ROW_SUSPENDED),
    ):
        row = expected_result(job_type, recorded["id"], affected_fraction=1.0)
        assert row is not None
        if int(recorded["id"]) > 2**40:
            assert row["created_at"] == recorded["created_at"]
        check_row(job_type, row, DOCUMENTED[job_type])


def test_truth_is_deterministic_and_seeded() -> None:
    ids = tweet_ids(5000, start=1_400_000_000_000_000_000, step=104_729)
    first = [expected_result("tweets", ident) for ident in ids]
    assert first == [expected_result("tweets", ident) for ident in ids]
    affected = sum(row is not None for row in first)
    assert 350 <= affected <= 650  # 10 % by default
    other_seed = [expected_result("tweets", ident, seed=7) for ident in ids]
    assert other_seed != first
    users = [expected_result("users", ident) for ident in ids]
    assert users != first
    everything = [expected_result("tweets", ident, affected_fraction=1.0) for ident in ids[:50]]
    assert all(row is not None for row in everything)
    assert all(expected_result("tweets", i, affected_fraction=0.0) is None for i in ids[:50])
    assert dict(iter_expected("tweets", ids)) == {
        ident: row for ident, row in zip(ids, first, strict=True) if row is not None
    }


def test_reasons_and_redaction_spread() -> None:
    for job_type in ("tweets", "users"):
        rows = [
            row
            for ident in tweet_ids(3000, step=3)
            if (row := expected_result(job_type, ident, affected_fraction=1.0)) is not None
        ]
        assert {row["reason"] for row in rows} == DOCUMENTED[job_type]
        assert any("redacted_at" in row for row in rows)
        assert any("redacted_at" not in row for row in rows if row["reason"] != "suspended")
        for row in rows[:200]:
            check_row(job_type, row, DOCUMENTED[job_type])


def test_unknown_reason_share() -> None:
    rows = [
        expected_result(
            "tweets",
            ident,
            affected_fraction=1.0,
            unknown_reason_fraction=1.0,
            unknown_reason="edited",
        )
        for ident in tweet_ids(50)
    ]
    assert {row["reason"] for row in rows if row} == {"edited"}


@settings(max_examples=300, deadline=None)
@given(
    job_type=st.sampled_from(["tweets", "users"]),
    number=st.integers(min_value=0, max_value=10**19 - 1),
    seed=st.integers(min_value=0, max_value=2**31),
)
def test_any_id_gives_a_well_formed_row(job_type: str, number: int, seed: int) -> None:
    row = expected_result(job_type, str(number), seed=seed, affected_fraction=1.0)
    assert row is not None and row["id"] == str(number)
    check_row(job_type, row, DOCUMENTED[job_type])


async def test_result_file_matches_truth_with_real_quirks(
    start_sandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await start_sandbox(affected_fraction=0.3, seed=3)
    ids = tweet_ids(2000)
    job = await create_job(http, sandbox)
    await upload(http, job, ids_body(ids))
    raw = await download(http, job)
    lines = raw.split(b"\n")
    assert lines[2] == b""  # the blank third line of both recorded files
    assert raw.endswith(b"\n")
    rows = parse_results(raw)
    by_id = {row["id"]: row for row in rows}
    assert len(by_id) == len(rows)
    expected = sandbox.expected_results("tweets", ids)
    assert by_id == expected
    assert expected == {
        ident: row
        for ident in ids
        if (row := expected_result("tweets", ident, seed=3, affected_fraction=0.3))
    }
    input_order = [ident for ident in ids if ident in by_id]
    assert [row["id"] for row in rows] != input_order  # unordered, like real files
    for row in rows:
        check_row("tweets", row, DOCUMENTED["tweets"])


async def test_user_results_and_quirks_switched_off(
    start_sandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await start_sandbox(affected_fraction=0.5, blank_lines=False, shuffle=False)
    ids = [str(100_000 + n * 37) for n in range(300)]  # pre-snowflake user ids
    job = await create_job(http, sandbox, "users")
    await upload(http, job, ids_body(ids))
    raw = await download(http, job)
    assert b"\n\n" not in raw
    rows = parse_results(raw)
    assert [row["id"] for row in rows] == [i for i in ids if i in set(r["id"] for r in rows)]
    assert {row["id"]: row for row in rows} == sandbox.expected_results("users", ids)
    for row in rows:
        check_row("users", row, DOCUMENTED["users"])


async def test_nothing_affected_gives_an_empty_file(
    start_sandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await start_sandbox(affected_fraction=0.0)
    job = await create_job(http, sandbox)
    await upload(http, job, ids_body(tweet_ids(100)))
    assert await download(http, job) == b""
