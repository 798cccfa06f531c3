"""When a pack of queued files becomes a batch (core/packing.py, pure): one table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.core.packing import PackTiming, hold_until

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# quiet, wait, now, oldest, newest, arriving, full -> hold until (None: form now)
CASES = [
    # A single file: held for the quiet period, then formed.
    ("single file, quiet not over", 1.0, 60.0, 0.5, 0.0, 0.0, False, False, 1.0),
    ("single file, quiet over", 1.0, 60.0, 1.0, 0.0, 0.0, False, False, None),
    # A burst: every newly queued file restarts the quiet period.
    ("burst, last file just queued", 1.0, 60.0, 3.2, 0.0, 3.0, False, False, 4.0),
    ("burst, quiet after the last file", 1.0, 60.0, 4.0, 0.0, 3.0, False, False, None),
    # A claim pass in progress holds the pack (till the wait's end; the pass's end wakes it).
    ("claim pass in progress", 1.0, 60.0, 5.0, 0.0, 0.0, True, False, 60.0),
    ("claim pass in progress, wait over", 1.0, 60.0, 60.0, 0.0, 0.0, True, False, None),
    # A steady trickle never goes quiet: the wait bounds it.
    ("trickle, quiet never reached", 1.0, 10.0, 9.7, 0.0, 9.5, False, False, 10.0),
    ("trickle, wait over", 1.0, 10.0, 10.0, 0.0, 9.9, False, False, None),
    # A full pack never waits: nothing more could join it.
    ("full pack", 1.0, 60.0, 0.0, 0.0, 0.0, False, True, None),
    ("full pack during a claim pass", 1.0, 60.0, 0.0, 0.0, 0.0, True, True, None),
    # The quiet period is bounded by the wait: quiet >= wait is a fixed wait for company.
    ("quiet above the wait: fixed wait", 5.0, 2.0, 1.0, 0.0, 0.0, False, False, 2.0),
    ("quiet above the wait: wait over", 5.0, 2.0, 2.0, 0.0, 0.0, False, False, None),
    # wait = 0: form as soon as the claim pass is over (the quiet period is off).
    ("no wait, pass over", 1.0, 0.0, 0.0, 0.0, 0.0, False, False, None),
    ("no wait, pass in progress", 1.0, 0.0, 0.0, 0.0, 0.0, True, False, None),
    # quiet = 0: form as soon as the claim pass is over, however young the files.
    ("no quiet, pass over", 0.0, 60.0, 0.0, 0.0, 0.0, False, False, None),
    ("no quiet, pass in progress", 0.0, 60.0, 0.0, 0.0, 0.0, True, False, 60.0),
]


@pytest.mark.parametrize(
    ("quiet", "wait", "now", "oldest", "newest", "arriving", "full", "expected"),
    [case[1:] for case in CASES], ids=[case[0] for case in CASES],
)
def test_when_a_pack_is_formed(quiet: float, wait: float, now: float, oldest: float,
                               newest: float, arriving: bool, full: bool,
                               expected: float | None) -> None:
    result = hold_until(PackTiming(quiet_s=quiet, wait_s=wait), now=at(now),
                        oldest_queued_at=at(oldest), newest_queued_at=at(newest),
                        arriving=arriving, full=full)
    assert result == (None if expected is None else at(expected))


def test_a_held_pack_is_always_looked_at_again_by_its_deadline() -> None:
    timing = PackTiming(quiet_s=1.5, wait_s=4.0)
    for step in range(0, 60):
        now = step / 10
        for newest in (0.0, now / 2, now):
            for arriving in (False, True):
                until = hold_until(timing, now=at(now), oldest_queued_at=at(0.0),
                                   newest_queued_at=at(newest), arriving=arriving, full=False)
                if until is not None:
                    assert at(now) < until <= at(4.0)
