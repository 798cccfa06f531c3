"""When a pack of queued files becomes a batch: at once, or after waiting for company (pure).

Files that arrive together (a copy of many files, a producer writing a batch) reach the queue
one by one, tens of milliseconds apart, and every remote job costs minutes to hours at X. So
a pack that still has room is held back while its files keep coming:

- never while it is *full*: the limits allow no more files in it (or the next queued file of
  its type does not fit, and FIFO never jumps it), so waiting gains nothing;
- while stable inbox files of its type are still being claimed (a claim pass in progress):
  those are the burst's other members;
- until no file of its type was queued for `quiet_s` (the debounce between claim passes);
- but never later than `wait_s` after its oldest file was queued, so a steady trickle
  cannot hold it back for ever. The quiet period is bounded by the wait: `quiet_s >=
  wait_s` holds every pack for exactly `wait_s` (a fixed wait for company), `wait_s = 0`
  forms every pack as soon as the claim pass is over.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class PackTiming:
    quiet_s: float = 1.0  # jobs.pack_quiet_s
    wait_s: float = 60.0  # jobs.pack_wait_s

    @property
    def effective_quiet_s(self) -> float:
        return max(0.0, min(self.quiet_s, self.wait_s))


def hold_until(
    timing: PackTiming,
    *,
    now: datetime,
    oldest_queued_at: datetime,
    newest_queued_at: datetime,
    arriving: bool,
    full: bool,
) -> datetime | None:
    """None: form the batch now. Else: hold it, and look again at the time returned (sooner
    if something changes: a file queued, a claim pass over)."""
    if full:
        return None
    deadline = oldest_queued_at + timedelta(seconds=max(0.0, timing.wait_s))
    if now >= deadline:
        return None
    if arriving:
        return deadline
    quiet_at = newest_queued_at + timedelta(seconds=timing.effective_quiet_s)
    if now >= quiet_at:
        return None
    return min(quiet_at, deadline)
