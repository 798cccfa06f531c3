"""Which job types share a lane (daemon/lanes.py): X's "one batch job at a time" by default."""

from __future__ import annotations

from orchestrator.core.model import JobType
from orchestrator.daemon.lanes import RunnerSettings, lanes_for
from orchestrator.remote.upload import RESUMABLE_QUANTUM


def test_global_concurrency_is_one_lane_for_both_types() -> None:
    assert lanes_for("global") == [[JobType.TWEETS, JobType.USERS]]


def test_per_type_concurrency_gives_each_type_its_own_lane() -> None:
    lanes = lanes_for("per-type")
    assert lanes == [[JobType.TWEETS], [JobType.USERS]]
    assert sorted(t for lane in lanes for t in lane) == sorted(JobType)  # each type once


def test_the_default_resumable_chunk_is_a_size_the_storage_accepts() -> None:
    settings = RunnerSettings()
    assert settings.upload_chunk_bytes % RESUMABLE_QUANTUM == 0  # GCS: 256 KiB multiples
    assert settings.upload_chunk_bytes < settings.resumable_threshold_bytes
