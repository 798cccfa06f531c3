"""The claim pass in progress, per job type (daemon/arrivals.py): what holds a burst's pack."""

from __future__ import annotations

from pathlib import Path

from orchestrator.core.model import JobType
from orchestrator.daemon.arrivals import Arrivals
from orchestrator.files.inbox import Candidate


def found(job_type: JobType, n: int) -> Candidate:
    return Candidate(Path(f"/inbox/{job_type}/f{n}.txt"), job_type, 10, 0, n)


def test_each_type_arrives_until_its_last_file_of_the_pass_is_claimed() -> None:
    settled: list[bool] = []
    arrivals = Arrivals(on_settled=lambda: settled.append(True))
    tweets = [found(JobType.TWEETS, n) for n in range(3)]
    users = [found(JobType.USERS, 9)]
    arrivals.scanned([tweets[0], users[0], tweets[1], tweets[2]])
    assert arrivals.arriving(JobType.TWEETS) and arrivals.arriving(JobType.USERS)
    arrivals.done(tweets[0])
    arrivals.done(users[0])  # the users pack may go; the tweets pack still waits
    assert not arrivals.arriving(JobType.USERS) and arrivals.arriving(JobType.TWEETS)
    assert settled == [True]
    arrivals.done(tweets[1])
    arrivals.done(tweets[2])
    assert not arrivals.arriving(JobType.TWEETS)
    assert settled == [True, True]
    arrivals.done(tweets[2])  # a stray second report changes nothing
    assert settled == [True, True]


def test_a_new_scan_replaces_what_a_pass_cut_short_left() -> None:
    settled: list[bool] = []
    arrivals = Arrivals(on_settled=lambda: settled.append(True))
    arrivals.scanned([found(JobType.TWEETS, n) for n in range(5)])
    arrivals.done(found(JobType.TWEETS, 0))  # then the pass broke off (a stop, a failure)
    arrivals.scanned([])  # the next scan finds nothing: no pack waits for files never coming
    assert not arrivals.arriving(JobType.TWEETS)
    assert settled == [True]
