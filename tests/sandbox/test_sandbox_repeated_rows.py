"""X sometimes answers one ID with two rows (scrub_geo and deleted): `repeated_fraction`."""

from __future__ import annotations

from collections import Counter

import aiohttp
from sandbox_helpers import create_job, download, ids_body, parse_results, tweet_ids, upload

from orchestrator.sandbox import expected_result, expected_rows, iter_expected

DOCUMENTED = {
    "tweets": {"deleted", "deactivated", "scrub_geo", "protected", "suspended"},
    "users": {"deleted", "deactivated", "protected", "suspended"},
}


def check_row(job_type: str, row: dict[str, str], reasons: set[str]) -> None:
    """Shaped like a recorded row (test_sandbox_results checks the single rows in depth)."""
    assert list(row)[:3] == ["id", "action", "created_at"] and list(row)[-1] == "reason"
    assert row["action"] == "delete" and row["reason"] in reasons
    if row["reason"] == "suspended":
        assert "redacted_at" not in row
    if "redacted_at" in row:
        assert row["redacted_at"] > row["created_at"]


async def test_a_share_of_ids_gets_two_rows_and_the_truth_says_so(
    start_sandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await start_sandbox(affected_fraction=0.5, repeated_fraction=0.3, seed=5)
    ids = tweet_ids(1000)
    job = await create_job(http, sandbox)
    await upload(http, job, ids_body(ids))
    rows = parse_results(await download(http, job))
    per_id = Counter(row["id"] for row in rows)
    twice = [ident for ident, n in per_id.items() if n == 2]
    assert set(per_id.values()) == {1, 2}
    assert 0.2 < len(twice) / len(per_id) < 0.4
    for ident in twice:
        first, second = (row for row in rows if row["id"] == ident)
        assert first != second and first["created_at"] == second["created_at"]
        assert "scrub_geo" in (first["reason"], second["reason"])
    for row in rows:
        check_row("tweets", row, DOCUMENTED["tweets"])

    def key(row: dict[str, str]) -> tuple[str, str]:
        return row["id"], row["reason"]

    expected = sandbox.expected_rows("tweets", ids)
    assert sorted(rows, key=key) == sorted(expected, key=key)
    pure = [row for _, row in iter_expected("tweets", ids, seed=5, affected_fraction=0.5,
                                             repeated_fraction=0.3)]
    assert pure == expected
    assert expected_rows("tweets", twice[0], seed=5, affected_fraction=0.5,
                         repeated_fraction=0.3) == [r for r in expected if r["id"] == twice[0]]
    # The first row is the one a sandbox without repeats writes: the option only adds rows.
    assert expected_result("tweets", twice[0], seed=5, affected_fraction=0.5) == next(
        r for r in expected if r["id"] == twice[0])


def test_repeats_are_off_by_default_and_seeded() -> None:
    ids = [str(10**17 + n * 7919) for n in range(2000)]
    plain = list(iter_expected("users", ids, affected_fraction=1.0))
    assert len(plain) == len(ids)
    one = list(iter_expected("users", ids, seed=1, affected_fraction=1.0, repeated_fraction=0.1))
    again = list(iter_expected("users", ids, seed=1, affected_fraction=1.0,
                               repeated_fraction=0.1))
    other = list(iter_expected("users", ids, seed=2, affected_fraction=1.0,
                               repeated_fraction=0.1))
    assert one == again and one != other
    assert 150 < len(one) - len(ids) < 250
    for _, row in one:
        check_row("users", row, DOCUMENTED["users"])
