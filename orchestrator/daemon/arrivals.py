"""Which job types have stable inbox files still being claimed in the current scan pass.

A scan hands its stable files to intake one by one (claim, validate, queue: milliseconds to
seconds each), so the first of a burst is queued while the others are still in the inbox.
The scheduler asks `arriving(job_type)` and holds a pack that still has room until the pass
is over (core/packing.py); `on_settled` wakes it when a type's last file of the pass is done.
In memory only: after a restart, the first scan's pass says the same again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from orchestrator.core.model import JobType
from orchestrator.files.inbox import Candidate


class Arrivals:
    def __init__(self, on_settled: Callable[[], None] = lambda: None) -> None:
        self._left: Counter[JobType] = Counter()
        self._on_settled = on_settled

    def scanned(self, candidates: Iterable[Candidate]) -> None:
        """A scan found these stable files; they are claimed next, in order. Replaces what
        an earlier pass left (a pass cut short by a stop counts for nothing)."""
        before = set(self._left)
        self._left = Counter(c.job_type for c in candidates)
        if before - set(self._left):
            self._on_settled()

    def done(self, candidate: Candidate) -> None:
        """One file of the pass is claimed (queued, rejected, skipped: whichever)."""
        if self._left[candidate.job_type] <= 0:
            return
        self._left[candidate.job_type] -= 1
        if self._left[candidate.job_type] == 0:
            del self._left[candidate.job_type]
            self._on_settled()

    def arriving(self, job_type: JobType) -> bool:
        return self._left[job_type] > 0
