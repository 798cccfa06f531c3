"""Lane plumbing for the runner: which job types share a lane, and the lane loop's settings."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.core.model import JobType


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    resumable_threshold_bytes: int = 64 << 20
    upload_chunk_bytes: int = 8 << 20
    rate_reserve: int = 10
    idle_check_s: float = 5.0
    max_sleep_s: float = 5.0
    download_warn_lead_s: float = 86400.0  # warn once when the results expire sooner
    compliant_copy: bool = False  # [outputs] compliant_copy: also <stem>.compliant.jsonl


def lanes_for(concurrency: str) -> list[list[JobType]]:
    if concurrency == "per-type":
        return [[JobType.TWEETS], [JobType.USERS]]
    return [[JobType.TWEETS, JobType.USERS]]
