"""Lane plumbing for the runner: which job types share a lane, the lane loop's settings,
and the wakeup that ends a lane's sleep early."""

from __future__ import annotations

from dataclasses import dataclass

import anyio

from orchestrator.core.model import JobType


class Wakeup:
    """Wakes sleeping lanes early (a new input was queued, or we are stopping)."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def notify(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        event = self._event
        with anyio.move_on_after(max(0.0, timeout)):
            await event.wait()
        if event.is_set() and event is self._event:
            self._event = anyio.Event()


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    resumable_threshold_bytes: int = 64 << 20
    upload_chunk_bytes: int = 8 << 20
    rate_reserve: int = 10
    idle_check_s: float = 5.0
    max_sleep_s: float = 5.0
    download_warn_lead_s: float = 86400.0  # warn once when the results expire sooner


def lanes_for(concurrency: str) -> list[list[JobType]]:
    if concurrency == "per-type":
        return [[JobType.TWEETS], [JobType.USERS]]
    return [[JobType.TWEETS, JobType.USERS]]
