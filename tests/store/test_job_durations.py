"""The poll schedule's history: how long earlier jobs took from upload to complete."""

from __future__ import annotations

import random
from datetime import timedelta

from orchestrator.core import machine
from orchestrator.core.model import Batch, JobType, RemoteJob, RemoteStatus
from orchestrator.core.polling import Sample
from orchestrator.store.sqlite import Store


async def run_job(store: Store, job_type: JobType, ids: int, seconds: float,
                  *, complete: bool = True) -> Batch:
    """A batch through create, upload and polls; complete `seconds` after its upload."""
    clock = store.clock
    batch = await store.form_batch(job_type, [], upload_name=f"{ids}.ids", id_count=ids,
                                   upload_bytes=20 * ids)
    policy, rng = machine.Policy(), random.Random(0)
    batch = await store.apply(batch, machine.start_attempt(batch, 1))
    now = clock.now()
    job = RemoteJob(id=str(batch.id), type=job_type, status=RemoteStatus.CREATED,
                    created_at=now, upload_url="u", upload_expires_at=now + timedelta(minutes=15),
                    download_url="d", download_expires_at=now + timedelta(days=7))
    batch = await store.apply(batch, machine.decide(batch, machine.JobCreated(job), now,
                                                    policy, rng))
    batch = await store.apply(batch, machine.decide(batch, machine.UploadFinished(),
                                                    clock.now(), policy, rng))
    clock.advance(seconds / 2)  # type: ignore[attr-defined]
    pending = RemoteJob(**{**{f: getattr(job, f) for f in job.__slots__},
                           "status": RemoteStatus.IN_PROGRESS})
    batch = await store.apply(batch, machine.decide(batch, machine.Polled(pending),
                                                    clock.now(), policy, rng))
    if complete:
        clock.advance(seconds / 2)  # type: ignore[attr-defined]
        done = RemoteJob(**{**{f: getattr(job, f) for f in job.__slots__},
                            "status": RemoteStatus.COMPLETE})
        batch = await store.apply(batch, machine.decide(batch, machine.Polled(done),
                                                        clock.now(), policy, rng))
    return batch


async def test_durations_newest_first_per_type_and_only_seen_complete(store: Store) -> None:
    await run_job(store, JobType.TWEETS, 100, 10.0)
    await run_job(store, JobType.USERS, 5, 99.0)
    await run_job(store, JobType.TWEETS, 2000, 40.0)
    await run_job(store, JobType.TWEETS, 7, 1.0, complete=False)  # still waiting
    assert await store.job_durations(JobType.TWEETS) == [Sample(2000, 40.0), Sample(100, 10.0)]
    assert await store.job_durations(JobType.USERS) == [Sample(5, 99.0)]
    assert await store.job_durations(JobType.TWEETS, limit=1) == [Sample(2000, 40.0)]
