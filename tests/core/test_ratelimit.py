"""Rate-limit bookkeeping: pure tables, no loop, no network."""

from __future__ import annotations

from email.utils import formatdate

import pytest
from multidict import CIMultiDict

from orchestrator.core.ratelimit import (
    RateBudget,
    RateLimit,
    parse_rate_limit,
    seconds_until,
    server_now,
)

NOW = 1_633_592_478.0  # 2021-10-07T07:41:18Z, the recorded first POST
RESET = 1_633_593_378  # + 900 s, as recorded


def headers(remaining: int | str, reset: int | str = RESET, limit: int | str = 150) -> dict:
    return {
        "x-rate-limit-limit": str(limit),
        "x-rate-limit-remaining": str(remaining),
        "x-rate-limit-reset": str(reset),
    }


def test_recorded_headers_parse() -> None:
    assert parse_rate_limit(headers(149)) == RateLimit(limit=150, remaining=149, reset_at=RESET)


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"x-rate-limit-remaining": "5"},
        {"x-rate-limit-reset": str(RESET)},
        headers("many"),
        headers(5, reset="soon"),
        headers(-1),
    ],
)
def test_missing_or_garbled_headers_are_ignored(raw: dict) -> None:
    budget = RateBudget()
    budget.update("get", headers(10))
    budget.update("get", raw)
    assert budget.snapshot()["get"].remaining == 10


def test_header_names_are_case_insensitive() -> None:
    budget = RateBudget()
    budget.update("list", {"X-Rate-Limit-Remaining": "7", "X-Rate-Limit-Reset": str(RESET)})
    budget.update(
        "create", CIMultiDict({"X-RATE-LIMIT-REMAINING": "3", "X-RATE-LIMIT-RESET": str(RESET)})
    )
    assert budget.snapshot()["list"].remaining == 7
    assert budget.snapshot()["create"].remaining == 3


def test_buckets_are_per_endpoint() -> None:
    budget = RateBudget()
    budget.update("create", headers(0))
    budget.update("get", headers(149))
    assert budget.wait_before("create", NOW) == pytest.approx(900)
    assert budget.wait_before("get", NOW) == 0
    assert budget.wait_before("list", NOW) == 0  # never called: unknown, go ahead


@pytest.mark.parametrize(
    ("remaining", "reserve", "now", "expected"),
    [
        (149, 0, NOW, 0.0),  # plenty left
        (1, 0, NOW, 0.0),  # the last request may be spent without a reserve
        (0, 0, NOW, 900.0),  # exhausted: wait for the reset
        (0, 0, NOW + 600, 300.0),  # ... only for what is left of the window
        (10, 10, NOW, 900.0),  # 10 left but all reserved for other clients
        (11, 10, NOW, 0.0),  # one above the reserve: fine
        (0, 0, RESET, 0.0),  # window has reset
        (0, 0, RESET + 5, 0.0),  # long past the reset
        (3, -2, NOW, 0.0),  # a negative reserve is treated as none
    ],
)
def test_wait_before_keeps_the_reserve(
    remaining: int, reserve: int, now: float, expected: float
) -> None:
    budget = RateBudget()
    budget.update("get", headers(remaining))
    assert budget.wait_before("get", now, reserve=reserve) == pytest.approx(expected)


def test_out_of_order_responses_keep_the_lowest_count_of_a_window() -> None:
    budget = RateBudget()
    budget.update("get", headers(100))
    budget.update("get", headers(102))  # an older response arriving late
    assert budget.snapshot()["get"].remaining == 100
    budget.update("get", headers(149, reset=RESET + 900))  # next window: fresh count
    assert budget.snapshot()["get"] == RateLimit(150, 149, RESET + 900)


def test_exhaust_blocks_until_given_reset() -> None:
    budget = RateBudget()
    budget.exhaust("create", NOW + 60)
    assert budget.wait_before("create", NOW) == pytest.approx(60)
    assert budget.wait_before("create", NOW + 60) == 0


@pytest.mark.parametrize(
    ("remaining", "reserve", "now", "expected"),
    [
        (150, 0, NOW, 6.0),  # 900 s / 150 requests: the documented ceiling
        (100, 50, NOW, 18.0),  # half kept free: 900 / 50
        (50, 50, NOW, 900.0),  # nothing usable: wait for the reset
        (10, 0, NOW + 800, 10.0),  # 100 s left, 10 requests
        (0, 0, RESET + 1, 0.0),  # reset passed: unknown, go
    ],
)
def test_spacing_spreads_the_budget(
    remaining: int, reserve: int, now: float, expected: float
) -> None:
    budget = RateBudget()
    budget.update("get", headers(remaining))
    assert budget.spacing("get", now, reserve=reserve) == pytest.approx(expected)


def test_snapshot_is_a_copy() -> None:
    budget = RateBudget()
    budget.update("get", headers(5))
    snap = budget.snapshot()
    snap.clear()
    assert "get" in budget.snapshot()


def test_a_reset_beyond_one_window_is_clock_skew_not_a_week_long_wait() -> None:
    budget = RateBudget()
    # The server's clock runs a day ahead of ours.
    budget.update("get", headers(0, reset=RESET + 86_400))
    assert budget.wait_before("get", NOW) == pytest.approx(960)
    assert budget.spacing("get", NOW) == pytest.approx(960)
    short = RateBudget(max_wait_s=100)
    short.update("get", headers(0))
    assert short.wait_before("get", NOW) == pytest.approx(100)


# -- clock skew (issue 10 item 10): the reset is read against the server's Date -------------


def dated(remaining: int, server_time: float, reset: int = RESET) -> dict:
    return {**headers(remaining, reset), "Date": formatdate(server_time, usegmt=True)}


@pytest.mark.parametrize("skew", [-900.0, 900.0, -86_400.0])
def test_reset_is_measured_on_the_servers_clock(skew: float) -> None:
    local = NOW + skew  # our clock is `skew` seconds off X's
    response = dated(0, NOW)
    assert seconds_until(RESET, response, local) == pytest.approx(900)
    budget = RateBudget()
    budget.update("get", response, now=local)
    assert budget.wait_before("get", local) == pytest.approx(900)
    assert budget.wait_before("get", local + 899.5) == pytest.approx(0.5)
    assert budget.wait_before("get", local + 900) == 0.0


def test_a_date_within_its_resolution_leaves_the_finer_local_clock() -> None:
    assert server_now(dated(0, NOW), NOW + 0.7) == NOW + 0.7
    assert server_now(dated(0, NOW), NOW + 5) == NOW


@pytest.mark.parametrize("date", [None, "yesterday", "Thu, 07 Oct 2021 07:41:18 -0000", ""])
def test_a_missing_or_unreadable_date_falls_back_to_the_local_clock(date: str | None) -> None:
    response = headers(0)
    if date is not None:
        response["date"] = date
    assert server_now(response, NOW + 600) == NOW + 600
    assert parse_rate_limit(response, NOW + 600) == RateLimit(150, 0, RESET)


def test_one_window_is_one_window_whatever_the_skew_jitter() -> None:
    """Responses of one window arrive with Dates a second apart: still the same window, so
    a late, higher remaining count does not overwrite the lower one."""
    budget = RateBudget()
    budget.update("get", dated(10, NOW + 1), now=NOW + 901)
    budget.update("get", dated(12, NOW), now=NOW + 901.2)
    assert budget.snapshot()["get"].remaining == 10
