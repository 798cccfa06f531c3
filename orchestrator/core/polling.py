"""PURE poll schedule: when to ask X about a waiting job next. No I/O, no clock.

Without history the schedule is the one the daemon always had (`poll_interval`): the first
status request `poll_initial_s` after the upload, then x`poll_factor`, capped by
`poll_max_s` and by a tenth of the job's age, never closer than the rate-limit spacing.

With history (`estimate`: the earlier jobs of the same type, their sizes and how long each
took from upload to complete) the daemon knows roughly when a job will end, and spends its
status requests there instead of evenly (`next_poll_s`):

- far from the expected end, polls are sparse: `SPARSE_FRACTION` to twice that of the job's
  age apart (so a job that ends much earlier than its estimate is noticed at most about
  half its age late), in equal steps landing exactly on the first poll of the dense window;
- from the earliest plausible end (the fastest of the recent jobs, relative to the model)
  to the expected end, polls are `dense` apart, on a grid that ends exactly at the expected
  end: a job as fast as the last ones is seen by that poll;
- after the expected end, the spacing starts dense and grows with the overrun, up to the
  no-history schedule (a job much slower than expected ends up polled as today).

Every interval except the one landing on a planned instant is at least `spacing_s`, the
spacing that spreads what is left of the rate window's `get` budget over the rest of the
window (`core.ratelimit.RateBudget.spacing`): it comes from X's own rate-limit headers, so a
time-scaled emulator scales it too. The only shorter steps are the last ones onto a planned
instant (the dense window, the expected end); the runner's budget check (`_respect_budget`)
still waits before the reserve is touched.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from math import floor
from typing import Protocol

# Samples of the newest finished jobs of a type that the estimate uses: enough for a median
# to ignore a few outliers (an outage while waiting inflates one job's duration), few enough
# to follow a change in X's speed within a day's jobs.
RECENT_JOBS = 20
# Far from the expected end: the next poll this share of the job's age later (up to twice
# it, to land on the dense window); at least the first interval and the rate spacing.
SPARSE_FRACTION = 0.25
# ... and at most this many times poll_max_s apart (a failed job is still noticed).
SPARSE_MAX_FACTOR = 10.0
# Near the expected end: polls this share of the expected duration apart (at most
# poll_max_s, at least the rate spacing and DENSE_MIN_SHARE of poll_initial_s).
DENSE_FRACTION = 0.01
DENSE_MIN_SHARE = 0.2
# Probe polls before the expected end when they are cheap (their span is at most
# PROBE_FRACTION of the job): they let the estimate come down when jobs get faster.
PROBE_POLLS = 2
PROBE_FRACTION = 0.05
# Two job sizes closer than this ratio say nothing about the per-ID slope.
DISTINCT_SIZES = 1.1


class Schedule(Protocol):
    """The poll settings of core.machine.Policy this module reads."""

    @property
    def poll_initial_s(self) -> float: ...
    @property
    def poll_max_s(self) -> float: ...
    @property
    def poll_factor(self) -> float: ...
    @property
    def poll_age_fraction(self) -> float: ...
    @property
    def poll_min_spacing_s(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Sample:
    """One finished job: its size and the seconds from upload done to complete noticed."""

    ids: int
    seconds: float


@dataclass(frozen=True, slots=True)
class Estimate:
    expected_s: float  # seconds from upload done to complete, as predicted
    early_s: float  # the earliest plausible end (<= expected_s), from the recent spread
    samples: int


def _fit(samples: Sequence[Sample]) -> tuple[float, float]:
    """(intercept, seconds per ID): Theil-Sen when sizes differ (the median of the pairwise
    slopes, robust to outliers), both clamped at 0 (a job never takes negative time)."""
    slopes = [
        (b.seconds - a.seconds) / (b.ids - a.ids)
        for a, b in combinations(samples, 2)
        if min(a.ids, b.ids) > 0 and max(a.ids, b.ids) / min(a.ids, b.ids) >= DISTINCT_SIZES
    ]
    slope = max(0.0, statistics.median(slopes)) if slopes else 0.0
    intercept = max(0.0, statistics.median(s.seconds - slope * s.ids for s in samples))
    return intercept, slope


def estimate(history: Sequence[Sample], ids: int) -> Estimate | None:
    """How long a job of `ids` IDs should take, from `history` (newest first), or None.

    With one size in the history (the common case: a producer writes files of one size)
    the expected duration is that size's median, scaled down for a smaller job and not up
    for a larger one: an estimate that errs early costs a few polls, one that errs late
    costs lateness.
    """
    recent = [s for s in history[:RECENT_JOBS] if s.seconds >= 0 and s.ids >= 0]
    if not recent:
        return None
    intercept, slope = _fit(recent)
    if slope > 0:
        def predict(n: int) -> float:
            return intercept + slope * n
    else:
        size = statistics.median(s.ids for s in recent)
        base = statistics.median(s.seconds for s in recent)

        def predict(n: int) -> float:
            return base * min(1.0, n / size) if size > 0 else base
    expected = predict(ids)
    ratios = [s.seconds / p for s in recent if (p := predict(s.ids)) > 0]
    early = expected * min(1.0, min(ratios, default=1.0))
    return Estimate(expected_s=expected, early_s=early, samples=len(recent))


def poll_interval(
    poll_count: int, policy: Schedule, age_s: float | None = None,
    spacing_s: float | None = None,
) -> float:
    """The no-history schedule: short at first, growing geometrically, capped; with the
    job's age known, also at most a fixed share of it (never below the first interval nor
    the rate spacing: `spacing_s` when the runner knows the budget, else the static one)."""
    interval = min(policy.poll_max_s,
                   policy.poll_initial_s * policy.poll_factor ** min(poll_count, 60))
    if age_s is not None:
        rate = policy.poll_min_spacing_s if spacing_s is None else spacing_s
        floor_s = max(policy.poll_initial_s, rate)
        interval = min(interval, max(floor_s, age_s * policy.poll_age_fraction))
    return interval


def dense_spacing(expected_s: float, policy: Schedule, spacing_s: float) -> float:
    return max(spacing_s, policy.poll_initial_s * DENSE_MIN_SHARE,
               min(policy.poll_max_s, DENSE_FRACTION * expected_s))


def window_start(est: Estimate, dense: float) -> float:
    """The first poll of the dense window: the earliest plausible end, earlier by up to
    PROBE_POLLS grid steps when they are cheap, snapped onto the grid ending at the
    expected end."""
    start = est.early_s
    if PROBE_POLLS * dense <= PROBE_FRACTION * est.expected_s:
        start = min(start, est.expected_s - PROBE_POLLS * dense)
    steps = floor(max(0.0, est.expected_s - max(start, 0.0)) / dense + 1e-9)  # 2.0 may be 1.99..
    return est.expected_s - steps * dense


def next_poll_s(
    age_s: float, poll_count: int, policy: Schedule, est: Estimate | None = None,
    spacing_s: float | None = None,
) -> float:
    """Seconds from now (`age_s` after the upload, `poll_count` polls so far) to the next
    status request of a job that is not complete yet."""
    if est is None:
        if poll_count == 0:
            return policy.poll_initial_s
        return poll_interval(poll_count, policy, age_s, spacing_s)
    rate = policy.poll_min_spacing_s if spacing_s is None else spacing_s
    dense = dense_spacing(est.expected_s, policy, rate)
    first_dense = window_start(est, dense)
    eps = 1e-6 * max(1.0, est.expected_s)
    if age_s + eps < first_dense:
        # Far: sparse steps of equal length landing exactly on the dense window.
        gap = first_dense - age_s
        sparse = max(rate, policy.poll_initial_s,
                     min(SPARSE_FRACTION * age_s, SPARSE_MAX_FACTOR * policy.poll_max_s))
        return gap / max(1, floor(gap / sparse + 1e-9))
    if age_s + eps < est.expected_s:
        # In the window: on the grid that ends at the expected end.
        left = (est.expected_s - age_s) % dense
        return dense if left <= eps else left
    # Overdue: dense at first, then backing off with the overrun, up to the plain schedule.
    plain = poll_interval(poll_count, policy, age_s, spacing_s)
    return min(max(plain, dense), max(dense, age_s - est.expected_s))


def planned_polls(
    duration_s: float, policy: Schedule, est: Estimate | None = None,
    spacing_s: float | None = None, limit: int = 100_000,
) -> list[float]:
    """The schedule on paper: the ages (seconds after the upload) of the status requests for
    a job that completes `duration_s` after its upload, up to the first that sees it."""
    ages = [next_poll_s(0.0, 0, policy, est, spacing_s)]
    while ages[-1] < duration_s and len(ages) < limit:
        ages.append(ages[-1] + next_poll_s(ages[-1], len(ages), policy, est, spacing_s))
    return ages
