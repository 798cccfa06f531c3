"""Issue 11 part 5: a job's polls are timed by the earlier jobs of its type.

Two 10-minute jobs one after the other, on the sandbox's clock warped (SandboxTime): the
first has no history and polls on the plain schedule (about every minute once old); the
second is expected to end when the first did and spends its status requests there.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from clocks import SandboxTime
from daemon_helpers import TOKEN, db_rows, drop, load, make_ids, outcome, running_service, wait_for
from resilience_helpers import write_config_ex

from orchestrator.core.machine import Policy
from orchestrator.core.polling import planned_polls
from orchestrator.sandbox import Sandbox, SandboxConfig

PROCESSING_S = 600.0
PRODUCTION_POLL = {"poll": {"initial_interval_s": 5.0, "max_interval_s": 60.0,
                            "backoff_factor": 1.5}}


def gets_per_job(sb: Sandbox) -> list[int]:
    """Status requests of each job, split at each create (one job at a time)."""
    counts: list[int] = []
    for method, path, status in sb.request_log:
        if not path.startswith("/2/compliance/jobs") or status != 200:
            continue
        if method == "POST":
            counts.append(0)
        elif path.rstrip("/") != "/2/compliance/jobs" and counts:
            counts[-1] += 1
    return counts


async def test_the_second_job_polls_where_the_first_one_ended(tmp_path: Path) -> None:
    async with Sandbox(SandboxConfig(token=TOKEN, processing_time_s=PROCESSING_S,
                                     seed=11)) as sb:
        config = load(write_config_ex(tmp_path, sb.base_url, pack_files="false",
                                      extra=PRODUCTION_POLL))
        async with running_service(config, clock=SandboxTime(sb.clock, warp=True)):
            for name, seed in (("first.txt", 1), ("second.txt", 2)):
                drop(tmp_path, "tweets", name, make_ids(seed, 50))
                await wait_for(lambda n=name: outcome(tmp_path, "tweets", n) == "delivered",
                               timeout=60, what=f"{name} delivered")
        first, second = gets_per_job(sb)
    rows = db_rows(tmp_path, "SELECT uploaded_at, completed_at FROM batches ORDER BY id")
    took = [(datetime.fromisoformat(r["completed_at"])
             - datetime.fromisoformat(r["uploaded_at"])).total_seconds() for r in rows]
    # Job 1: the plain schedule (about 34 requests for 10 minutes), seen within its cap.
    plain = len(planned_polls(PROCESSING_S, Policy()))
    assert abs(first - plain) <= 2, (first, plain)
    assert PROCESSING_S <= took[0] <= PROCESSING_S + 60
    # Job 2: about half the requests, and seen complete no later than job 1 was.
    assert second <= plain * 0.6, (second, plain)
    assert PROCESSING_S <= took[1] <= took[0] + 1.0, took
