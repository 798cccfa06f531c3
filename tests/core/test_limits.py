"""X's published limits (core/limits.py) and the poll spacing derived from them (pure)."""

from __future__ import annotations

import pytest

from orchestrator.core.limits import (
    DEFAULT_RATE_RESERVE,
    RATE_LIMIT_REQUESTS,
    RATE_WINDOW_S,
    UPLOAD_WINDOW_S,
    poll_spacing_s,
)
from orchestrator.sandbox import SandboxConfig


def test_the_documented_numbers() -> None:
    assert (RATE_LIMIT_REQUESTS, RATE_WINDOW_S, UPLOAD_WINDOW_S) == (150, 900.0, 900.0)
    # The sandbox emulates the same X: its defaults must not drift from these.
    sandbox = SandboxConfig()
    assert sandbox.upload_window_s == UPLOAD_WINDOW_S


@pytest.mark.parametrize("reserve", [0, DEFAULT_RATE_RESERVE, 100, RATE_LIMIT_REQUESTS - 1])
def test_polls_spaced_this_way_never_use_the_reserve(reserve: int) -> None:
    spacing = poll_spacing_s(reserve)
    polls_per_window = RATE_WINDOW_S / spacing
    assert polls_per_window == pytest.approx(RATE_LIMIT_REQUESTS - reserve)


def test_the_default_reserve_spaces_polls_about_6_4_s_apart() -> None:
    assert poll_spacing_s() == pytest.approx(900 / 140)


def test_a_reserve_of_the_whole_budget_still_gives_a_finite_spacing() -> None:
    assert poll_spacing_s(RATE_LIMIT_REQUESTS) == RATE_WINDOW_S
    assert poll_spacing_s(RATE_LIMIT_REQUESTS + 50) == RATE_WINDOW_S
