"""Two hosts, one PostgreSQL store, one shared folder tree (issue 12): real `run` processes
with different host_ids against one sandbox. The leader is killed with SIGKILL >= 20 times,
at least four times in each stage of a job's life (creating, uploading, waiting,
downloading, delivering: each stage is made long enough with the sandbox's scripted faults,
waited for from the database and the request log, and read back from the database after
the kill): every input is delivered exactly once, no remote job name is used twice, no job
is left behind to block the slot, and each new leader resumed the job in flight (the same
upload session, only the chunks not yet acknowledged; the download by Range). And fencing:
the leader's database connections are cut mid-upload; from the sandbox's request log (each
request names its host in the User-Agent), no request of the old leader ARRIVES after the
standby's first one. And a standby cut from the database exits 1 and, restarted, takes over.

On SQLite two hosts cannot share a store (one local file), so the cluster logic is covered
there by tests/daemon/test_cluster.py and tests/store/test_lease.py.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import drop, make_ids, outcome, read_results, wait_for
from two_host_helpers import (
    CHUNK,
    HOSTS,
    STAGES,
    TTL_S,
    Cluster,
    Database,
    Kill,
    StageKiller,
    storage,
)

from orchestrator.sandbox import Sandbox

PER_STAGE = 4  # kills in each of the five stages: 20 at least
FILES_PER_JOB = 60  # one pack: the delivery writes 120 files, long enough to be hit
IDS_PER_FILE = 3_500  # 210k IDs: a ~4 MB upload body, 16 resumable chunks of 256 KiB
MAX_ROUNDS = 8
JOBS = {"resumable_threshold_bytes": 0, "upload_chunk_bytes": CHUNK, "pack_wait_s": 10.0,
        "pack_quiet_s": 1.0}


@pytest.fixture
def pg(pg_server: Any) -> Iterator[Database]:
    db = Database(pg_server)
    yield db
    db.close()


def remote_names(sandbox: Sandbox) -> list[str]:
    return [str(job.get("name")) for job in sandbox.jobs()]


def drop_job(shared: Path, files: dict[str, list[str]], rng: random.Random) -> None:
    """FILES_PER_JOB inputs staged as `.part`, then renamed in at once: one pack, one job."""
    folder = shared / "inbox" / "tweets"
    folder.mkdir(parents=True, exist_ok=True)
    staged = []
    for _ in range(FILES_PER_JOB):
        name = f"f{len(files):03d}.txt"
        files[name] = make_ids(rng.randrange(1 << 30), IDS_PER_FILE)
        part = folder / f"{name}.part"
        part.write_text("".join(f"{line}\n" for line in files[name]))
        staged.append(part)
    for part in staged:
        part.rename(part.with_suffix(""))


def after(sandbox: Sandbox, kill: Kill, upto: int | None = None) -> list[Any]:
    """The requests of the hosts other than the killed one, logged after the kill."""
    return [r for r in sandbox.request_log[kill.log_at:upto] if r.host not in (None, kill.host)]


def check_resumed(sandbox: Sandbox, kills: list[Kill]) -> None:
    """Each new leader carried on with the job in flight instead of starting it again."""
    for i, kill in enumerate(kills):
        upto = kills[i + 1].log_at if i + 1 < len(kills) else None
        if kill.stage == "uploading":
            ours = [r for r in after(sandbox, kill, upto) if storage(r, "submission")]
            assert not [r for r in ours if r.method == "POST"], \
                "the new leader started a second upload session"
            left = kill.detail["chunks"] - kill.detail["acked"]
            puts = [r for r in ours if r.method == "PUT"]
            # A status query, the chunks not yet acknowledged (one may be resent), no more.
            assert 0 < len(puts) <= left + 2, (len(puts), kill.detail)
        if kill.stage == "downloading":
            gets = [r for r in after(sandbox, kill, upto) if storage(r, "delivery")]
            assert gets and gets[0].status == 206, \
                f"the new leader did not resume the download by Range: {gets[:3]}"


@pytest.mark.timeout(900)
async def test_kill_the_leader_in_every_stage_every_input_once_no_duplicate_jobs(
    tmp_path: Path, make_sandbox: Any, pg: Database,
) -> None:
    rng = random.Random(12)
    files: dict[str, list[str]] = {}
    async with make_sandbox(processing_time_s=3.0) as sandbox:
        cluster = Cluster(tmp_path, sandbox, pg, jobs=JOBS)
        killer = StageKiller(cluster, sandbox)
        try:
            for host in HOSTS:
                cluster.start(host)
            for _ in range(MAX_ROUNDS):
                landed = Counter(k.stage for k in killer.kills)
                want = {s for s in STAGES if landed[s] < PER_STAGE}
                if not want:
                    break
                await killer.round(lambda: drop_job(tmp_path, files, rng), want)
            try:
                await wait_for(lambda: all(outcome(tmp_path, "tweets", n) == "delivered"
                                           for n in files), 120, "every input delivered")
            except AssertionError:
                late = [n for n in files if outcome(tmp_path, "tweets", n) != "delivered"]
                states = pg.input_states()
                raise AssertionError(
                    f"not delivered: {[(n, states.get(n)) for n in late][:10]}; batches "
                    f"{pg.batch_states()}; kills {[(k.stage, k.host) for k in killer.kills]}"
                ) from None
        finally:
            cluster.stop_all()
        kills = killer.kills
        landed = Counter(k.stage for k in kills)
        takeovers = sorted(killer.takeovers)
        print(f"\n{len(kills)} kills, by stage {dict(landed)}; takeover (kill -> new holder)"
              f" p50 {takeovers[len(takeovers) // 2]:.1f} s, max {takeovers[-1]:.1f} s"
              f" (lease_ttl_s {TTL_S})")
        assert len(kills) >= 5 * PER_STAGE
        assert all(landed[s] >= PER_STAGE for s in STAGES), f"kills by stage: {dict(landed)}"
        for kill in kills:
            if kill.stage == "delivering":  # mid-delivery: some of the pack already out
                done, total = kill.detail["delivered"]
                assert 0 < done <= total, kill
        check_resumed(sandbox, kills)
        for name, ids in files.items():
            stem = Path(name).stem
            assert read_results(tmp_path, "tweets", stem) == sandbox.expected_results("tweets", ids)
        outbox = sorted(p.name for p in (tmp_path / "outbox" / "tweets").iterdir())
        assert outbox == sorted(f"{Path(n).stem}{s}" for n in files
                                for s in (".jsonl", ".manifest.json")), "each input exactly once"
        names = remote_names(sandbox)
        assert len(names) == len(set(names)), f"a remote job name was used twice: {names}"
        open_jobs = [j for j in sandbox.jobs() if j.get("status") in ("created", "in_progress")]
        assert open_jobs == [], "no orphan job may block the slot"


async def test_a_leader_cut_from_the_database_mid_upload_is_silent_before_the_standby_acts(
    tmp_path: Path, make_sandbox: Any, pg: Database,
) -> None:
    async with make_sandbox(processing_time_s=0.2) as sandbox:
        cluster = Cluster(tmp_path, sandbox, pg, jobs=JOBS)
        try:
            cluster.start(HOSTS[0])
            await wait_for(lambda: pg.holder() == HOSTS[0], timeout=30, what="node-a leading")
            cluster.start(HOSTS[1])
            # Every upload request answered slowly: seconds of uploading, chunk by chunk.
            sandbox.faults.add("upload", "slow", 1000, delay=1.0)
            ids = make_ids(7, 120_000)
            drop(tmp_path, "tweets", "big.txt", ids)
            await wait_for(lambda: any(storage(r, "submission") and r.status == 308
                                       for r in sandbox.request_log),
                           timeout=60, what="a first chunk acknowledged")
            pg.cut(HOSTS[0])
            await wait_for(lambda: cluster.procs[HOSTS[0]].poll() is not None,
                           timeout=TTL_S * 3, what="the old leader exiting")
            assert cluster.procs[HOSTS[0]].returncode == 1
            sandbox.faults.clear()
            await wait_for(lambda: outcome(tmp_path, "tweets", "big.txt") == "delivered",
                           timeout=180, what="the standby delivering")
        finally:
            cluster.stop_all()
        log = [r for r in sandbox.request_log if r.host in HOSTS]
        first_b = min(r.arrived or 0 for r in log if r.host == HOSTS[1])
        last_a = max(r.arrived or 0 for r in log if r.host == HOSTS[0])
        assert last_a < first_b, "the old leader sent a request after the standby's first"
        assert len(sandbox.jobs()) == 1, "the standby adopted the job, never made a second"
        b_uploads = [r for r in log if r.host == HOSTS[1] and storage(r, "submission")]
        assert b_uploads and not [r for r in b_uploads if r.method == "POST"], \
            "the standby resumed node-a's upload session, it did not start another"
        assert read_results(tmp_path, "tweets", "big") == sandbox.expected_results("tweets", ids)


async def test_a_standby_cut_from_the_database_exits_and_takes_over_once_restarted(
    tmp_path: Path, sandbox: Sandbox, pg: Database,
) -> None:
    """No reconnect inside a process: a standby whose connection died must not stay up
    looking ready; it exits 1 (systemd restarts it) and, restarted, can take over."""
    cluster = Cluster(tmp_path, sandbox, pg)
    try:
        cluster.start(HOSTS[0])
        await wait_for(lambda: pg.holder() == HOSTS[0], timeout=30, what="node-a leading")
        cluster.start(HOSTS[1])
        await wait_for(lambda: bool(cluster.log_events(HOSTS[1], "cluster.standby")),
                       timeout=30, what="node-b standing by")
        pg.cut(HOSTS[1])
        await wait_for(lambda: cluster.procs[HOSTS[1]].poll() is not None,
                       timeout=TTL_S * 4, what="the cut standby exiting")
        assert cluster.procs[HOSTS[1]].returncode == 1
        # Its lease loop gave up after a TTL of failed rounds, or a task that cannot carry on
        # without the database (e.g. the start-up retention pass) ended the process first.
        assert (cluster.log_events(HOSTS[1], "cluster.standby_lost_database")
                or cluster.log_events(HOSTS[1], "service.crashed"))
        cluster.procs.pop(HOSTS[1])
        cluster.start(HOSTS[1])  # what systemd does (Restart=on-failure)
        await wait_for(lambda: len(cluster.log_events(HOSTS[1], "cluster.standby")) >= 2,
                       timeout=30, what="node-b back as the standby")
        cluster.kill(HOSTS[0])
        await wait_for(lambda: pg.holder() == HOSTS[1], timeout=TTL_S * 4,
                       what="the restarted standby taking over")
        ids = make_ids(3, 500)
        drop(tmp_path, "tweets", "after.txt", ids)
        await wait_for(lambda: outcome(tmp_path, "tweets", "after.txt") == "delivered",
                       timeout=60, what="node-b delivering")
    finally:
        cluster.stop_all()
    assert read_results(tmp_path, "tweets", "after") == sandbox.expected_results("tweets", ids)
