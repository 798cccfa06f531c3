"""What the config means for the state machine, the lanes and the scheduler.

Built at start and again on every reload (service.py), so a live change reaches the runner.
"""

from __future__ import annotations

from orchestrator.config import Config
from orchestrator.core.limits import poll_spacing_s
from orchestrator.core.machine import Policy
from orchestrator.core.retry import RetryPolicy
from orchestrator.daemon.lanes import RunnerSettings
from orchestrator.daemon.scheduler import PackingLimits


def policy_of(config: Config) -> Policy:
    jobs, poll = config.jobs, config.poll
    return Policy(
        max_attempts=jobs.max_attempts,
        upload_margin_s=jobs.upload_margin_s,
        download_margin_s=jobs.download_margin_s,
        poll_initial_s=poll.initial_interval_s,
        poll_max_s=poll.max_interval_s,
        poll_factor=poll.backoff_factor,
        poll_min_spacing_s=poll_spacing_s(poll.rate_reserve, poll.rate_window_s),
        retry=RetryPolicy(
            max_stage_retries=jobs.max_stage_retries,
            backoff_initial_s=jobs.backoff_initial_s,
            backoff_max_s=jobs.backoff_max_s,
        ),
    )


def settings_of(config: Config) -> RunnerSettings:
    return RunnerSettings(
        resumable_threshold_bytes=config.jobs.resumable_threshold_bytes,
        upload_chunk_bytes=config.jobs.upload_chunk_bytes,
        rate_reserve=config.poll.rate_reserve,
        download_warn_lead_s=config.jobs.download_warn_lead_s,
        compliant_copy=config.outputs.compliant_copy,
    )


def packing_of(config: Config) -> PackingLimits:
    jobs = config.jobs
    return PackingLimits(
        max_ids_per_job=jobs.max_ids_per_job,
        max_bytes_per_job=jobs.max_bytes_per_job,
        pack_wait_s=jobs.pack_wait_s,
        pack_quiet_s=jobs.pack_quiet_s,
        enabled=jobs.pack_files,
    )
