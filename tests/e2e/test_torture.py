"""Torture (issue 4, part 7): the daemon as a subprocess against the sandbox, with random
scripted faults, SIGKILLed at random moments again and again, then left to finish.

Every input must end with exactly one result set equal to the sandbox's ground truth, or a
reasoned rejection; the spool must be empty; no remote job may be created twice for one
batch; the database must pass `PRAGMA integrity_check`; no secret may reach the log.

Random choices come from one seed, printed at the start and named in every failure:
    TORTURE_SEED=<seed> .venv/bin/pytest tests/e2e/test_torture.py
replays the same files, faults and kill moments (the timing of a real process still varies).
TORTURE_KILLS raises the number of kills (default 25).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from daemon_helpers import db_rows, drop, make_ids, outcome, read_results
from resilience_helpers import (
    SECRET_MARKERS,
    LogTap,
    error_doc,
    spawn_daemon,
    spool_empty,
    write_config_ex,
)

from orchestrator.sandbox import Sandbox

pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("TORTURE_KILLS", "25"))
MAX_IDS_PER_JOB = 15000
STAGES = ("creating", "uploading", "waiting", "downloading", "delivering")
BAD_LINES = ("12x4", "not-an-id", "3.14", "-42", "0x1F", "\uff11\uff12")  # last: fullwidth


@dataclass
class InputSpec:
    job_type: str
    name: str
    lines: list[str]
    ids: list[str]          # the valid IDs among the lines
    must_reject: bool = False


@dataclass
class Stats:
    seed: int
    kills: int = 0
    early_kills: int = 0    # before the daemon said it was ready
    restarts: int = 0
    kills_by_stage: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    setup: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def summary(self, extra: dict[str, Any]) -> str:
        data = {"seed": self.seed, "kills": self.kills, "early_kills": self.early_kills,
                "restarts": self.restarts, "kills_by_stage": dict(self.kills_by_stage),
                "faults": dict(self.faults), **self.setup,
                "duration_s": round(time.monotonic() - self.started, 1), **extra}
        return json.dumps(data, sort_keys=True)


def plan_inputs(rng: random.Random) -> list[InputSpec]:
    """A few dozen files of both types: two big enough to be split, files with bad lines,
    an empty one (rejected), and many small ones that get packed."""
    specs: list[InputSpec] = []
    seed_base = rng.randrange(10**6)
    for n, (job_type, count) in enumerate((("tweets", 34000), ("users", 31000))):
        ids = make_ids(seed_base + n, count)
        specs.append(InputSpec(job_type, f"big-{n}.txt", ids, ids))
    for n in range(26):
        job_type = rng.choice(("tweets", "users"))
        ids = make_ids(seed_base + 100 + n, rng.randint(5, 400))
        lines = list(ids)
        if n % 8 == 3:  # some files carry bad lines, dropped under invalid_lines = "drop"
            for bad in rng.sample(BAD_LINES, 2):
                lines.insert(rng.randrange(len(lines) + 1), bad)
        specs.append(InputSpec(job_type, f"small-{n:02d}.txt", lines, ids))
    specs.append(InputSpec("users", "empty.txt", [], [], must_reject=True))
    rng.shuffle(specs)
    return specs


FAULT_MENU: list[tuple[str, str, int, dict[str, Any]]] = [
    ("create", "500", 1, {}), ("create", "503", 2, {}), ("create", "reset", 1, {}),
    ("create", "truncate", 1, {}), ("create", "429", 1, {"retry_after": 1}),
    ("get", "500", 1, {}), ("get", "reset", 2, {}), ("get", "429", 1, {"retry_after": 1}),
    ("get", "slow", 1, {"delay": 0.5}),
    ("list", "500", 1, {}), ("list", "429", 1, {"retry_after": 1}),
    ("upload", "503", 2, {}), ("upload", "reset", 1, {"after_bytes": 20000}),
    ("upload", "slow", 1, {"delay": 0.5}),
    ("download", "500", 1, {}), ("download", "truncate", 1, {"after_bytes": 3000}),
    ("download", "reset", 2, {}), ("download", "slow", 1, {"delay": 0.5}),
]


def script_faults(sb: Sandbox, rng: random.Random, stats: Stats) -> None:
    for _ in range(rng.randint(0, 2)):
        if rng.random() < 0.12:
            sb.faults.fail_next_jobs(1, error="Internal error")
            stats.faults["job:failed"] += 1
            continue
        endpoint, kind, count, options = rng.choice(FAULT_MENU)
        if sum(f["endpoint"] == endpoint for f in sb.faults.pending()) >= 2:
            continue  # e.g. list faults wait for an adoption: don't let them pile up
        sb.faults.add(endpoint, kind, count=count, **options)
        stats.faults[f"{endpoint}:{kind}"] += 1


def batch_states(workdir: Path) -> list[str]:
    return [r["state"] for r in db_rows(workdir, "SELECT state FROM batches")]


def spool_names(workdir: Path) -> list[str]:
    return sorted(p.name for p in (workdir / "state" / "spool").iterdir())


def log_tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


async def wait_until(condition: Any, timeout: float) -> bool:
    with anyio.move_on_after(timeout):
        while not condition():
            await anyio.sleep(0.02)
        return True
    return False


class Daemon:
    """One `run` subprocess; its output is appended to the shared log."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.log_path = log_path
        self.offset = log_path.stat().st_size if log_path.exists() else 0
        self.process = spawn_daemon(config_path, log_path)

    def ready(self) -> bool:
        with open(self.log_path, "rb") as handle:
            handle.seek(self.offset)
            return b'"service.ready"' in handle.read()

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


@pytest.mark.timeout(420)
async def test_kill_the_daemon_at_random_moments_and_lose_nothing(
    tmp_path: Path, make_sandbox: Callable[..., Sandbox]
) -> None:
    seed = int(os.environ.get("TORTURE_SEED") or random.SystemRandom().randrange(2**31))
    replay = f"replay: TORTURE_SEED={seed} .venv/bin/pytest tests/e2e/test_torture.py"
    print(f"torture seed {seed} ({replay})")
    rng = random.Random(seed)
    stats = Stats(seed)
    log_path = tmp_path / "daemon.log"

    def fail(message: str) -> None:
        pytest.fail(f"{message}\n{replay}\nstats: {stats.summary({})}\n"
                    f"log tail:\n{log_tail(log_path)}", pytrace=False)

    # One lane for both types (X's documented rule), or one per type (what production did).
    concurrency = rng.choice(("global", "per-type"))
    stats.setup = {"concurrency": concurrency}
    async with make_sandbox(processing_time_s=0.3, seed=seed % 1000, concurrency=concurrency,
                            rate_limit=100_000) as sb:  # scripted 429s only
        config_path = write_config_ex(
            tmp_path, sb.base_url, invalid_lines="drop", max_attempts=10, max_stage_retries=30,
            max_ids_per_job=MAX_IDS_PER_JOB, resumable_threshold_bytes=100_000,
            upload_chunk_bytes=262144, min_age_s=0.05, concurrency=concurrency)
        specs = plan_inputs(rng)
        pending = list(specs)

        def feed(count: int) -> None:
            for spec in pending[:count]:
                drop(tmp_path, spec.job_type, spec.name, spec.lines)
            del pending[:count]

        feed(len(specs) // 4)
        daemon = Daemon(config_path, log_path)
        try:
            while stats.kills < KILLS:
                script_faults(sb, rng, stats)
                if rng.random() < 0.3:
                    sb.configure(processing_time_s=round(rng.uniform(0.2, 1.5), 2))
                # Spread the remaining files over the remaining kills, in bursts (which get
                # packed), so that most kills find the daemon busy.
                share = -(-len(pending) // max(1, KILLS - stats.kills))
                burst = rng.randint(share, 3 * share) if rng.random() < 0.5 else 0
                before = rng.randint(0, burst)
                feed(before)
                mode = rng.random()
                if mode < 0.15:  # early: during start-up and recovery
                    await anyio.sleep(rng.uniform(0.05, 0.8))
                    stats.early_kills += 0 if daemon.ready() else 1
                else:
                    if not await wait_until(daemon.ready, 30):
                        fail("the daemon did not get ready within 30 s")
                    if mode < 0.55:  # at a stage of some batch, if one shows up soon
                        stage = rng.choice(STAGES)
                        await wait_until(lambda s=stage: s in batch_states(tmp_path), 2.0)
                        await anyio.sleep(rng.uniform(0.0, 0.3))
                    else:
                        await anyio.sleep(rng.uniform(0.1, 2.0))
                feed(burst - before)  # files arrive while the daemon runs, too
                if not daemon.alive():
                    fail(f"the daemon exited by itself with {daemon.process.returncode}")
                stats.kills_by_stage.update(set(batch_states(tmp_path)) - {"done", "failed"}
                                            or {"idle"})
                daemon.kill()
                stats.kills += 1
                daemon = Daemon(config_path, log_path)
                stats.restarts += 1
            # Left to finish: no more faults, every file dropped.
            feed(len(pending))
            sb.faults.clear()
            sb.configure(processing_time_s=0.3)

            def finished() -> bool:
                return all(outcome(tmp_path, s.job_type, s.name) for s in specs) and (
                    spool_empty(tmp_path))

            if not await wait_until(finished, 150):
                missing = [s.name for s in specs if not outcome(tmp_path, s.job_type, s.name)]
                inputs = db_rows(tmp_path, "SELECT name, state FROM inputs ORDER BY id")
                batches = db_rows(tmp_path, "SELECT id, state, attempt, last_error FROM batches"
                                  " WHERE state NOT IN ('done', 'failed')")
                fail(f"not finished after 150 s: missing {missing}; inputs {inputs}; "
                     f"open batches {batches}; spool {spool_names(tmp_path)}")
            if not daemon.alive():
                fail(f"the daemon exited by itself with {daemon.process.returncode}")
            # (Before its signal handler exists, SIGTERM simply ends the process.)
            if not await wait_until(daemon.ready, 30):
                fail("the last daemon did not get ready within 30 s")
            daemon.process.send_signal(signal.SIGTERM)
            try:
                code = daemon.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                fail("the daemon did not stop within 40 s of SIGTERM")
            if code != 0:
                fail(f"the daemon exited with {code} after SIGTERM")
        finally:
            if daemon.alive():
                daemon.process.kill()
                daemon.process.wait(timeout=10)

        verdict = check_everything(tmp_path, sb, specs, log_path)
        print("torture stats:", stats.summary(verdict.pop("stats")))
        if verdict["problems"]:
            fail("\n".join(verdict["problems"]))


def check_everything(workdir: Path, sb: Sandbox, specs: list[InputSpec],
                     log_path: Path) -> dict[str, Any]:
    problems: list[str] = []
    delivered = rejected = 0
    expected_outbox: dict[str, set[str]] = {"tweets": set(), "users": set()}
    expected_rejected: set[str] = set()
    for spec in specs:
        got = outcome(workdir, spec.job_type, spec.name)
        stem = Path(spec.name).stem
        if got == "delivered" and not spec.must_reject:
            delivered += 1
            expected_outbox[spec.job_type] |= {f"{stem}.jsonl", f"{stem}.manifest.json"}
            results = read_results(workdir, spec.job_type, stem)
            truth = sb.expected_results(spec.job_type, spec.ids)
            if results != truth:
                problems.append(f"{spec.name}: {len(results)} result rows, the sandbox says "
                                f"{len(truth)}; differing ids "
                                f"{sorted(set(results) ^ set(truth))[:5]}")
        elif got == "rejected":
            rejected += 1
            expected_rejected |= {spec.name, f"{spec.name}.error.json"}
            doc = error_doc(workdir, spec.name)
            if not (doc.get("stage") and (doc.get("message") or doc.get("reason"))):
                problems.append(f"{spec.name}: rejection without a reason: {doc}")
            if not spec.must_reject:
                problems.append(f"{spec.name}: rejected although it is valid: {doc}")
        else:
            problems.append(f"{spec.name}: outcome {got!r}")
    # Exactly one result set per input: nothing else in the outbox (no `-2` copies, no temps).
    for job_type, wanted in expected_outbox.items():
        folder = workdir / "outbox" / job_type
        present = {p.name for p in folder.iterdir()} if folder.exists() else set()
        if present != wanted:
            problems.append(f"outbox/{job_type}: extra {sorted(present - wanted)}, "
                            f"missing {sorted(wanted - present)}")
    folder = workdir / "outbox" / "rejected"
    present = {p.name for p in folder.iterdir()} if folder.exists() else set()
    if present != expected_rejected:
        problems.append(f"outbox/rejected: {sorted(present)} != {sorted(expected_rejected)}")
    for job_type in ("tweets", "users"):
        leftovers = list((workdir / "inbox" / job_type).iterdir())
        if leftovers:
            problems.append(f"inbox/{job_type} still holds {[p.name for p in leftovers]}")
    if not spool_empty(workdir):
        problems.append(f"spool not empty: {spool_names(workdir)}")

    # No remote job created twice for one batch; every remote job known to the daemon.
    jobs = sb.jobs()
    names = Counter(job["name"] for job in jobs)
    twice = {name: n for name, n in names.items() if n > 1}
    if twice:
        problems.append(f"remote jobs created twice under one name: {twice}")
    known = {r["x_job_id"]: r for r in db_rows(workdir, "SELECT * FROM remote_jobs")}
    keys = {r["id"]: r["key"] for r in db_rows(workdir, "SELECT id, key FROM batches")}
    for job in jobs:
        row = known.get(job["id"])
        if row is None:
            problems.append(f"remote job {job['id']} ({job['name']}, {job['status']}) is not "
                            "in the daemon's remote_jobs table")
        elif row["name"] != job["name"] or row["name"] != f"{keys[row['batch_id']]}-"\
                f"{row['attempt']}":
            problems.append(f"remote job {job['id']}: name {job['name']} vs recorded {dict(row)}")
    still_active = [j["name"] for j in jobs if j["status"] in ("created", "in_progress")]
    if still_active:
        problems.append(f"remote jobs left active: {still_active}")
    batches = db_rows(workdir, "SELECT state FROM batches")
    if any(b["state"] not in ("done", "failed") for b in batches):
        problems.append(f"batches not final: {Counter(b['state'] for b in batches)}")
    [check] = db_rows(workdir, "PRAGMA integrity_check")
    if check["integrity_check"] != "ok":
        problems.append(f"integrity_check: {check}")

    text = log_path.read_text(errors="replace")
    leaked = [marker for marker in SECRET_MARKERS if marker in text]
    if leaked:
        problems.append(f"secrets in the daemon's log: {leaked}")
    crashed = [r for line in text.splitlines() if (r := LogTap.parse(line))
               and r.get("event") in ("runner.step_crashed", "service.crashed")]
    if crashed:
        problems.append(f"the daemon reported its own bugs: {crashed[:3]}")
    shapes = db_rows(workdir, "SELECT batch_id, COUNT(*) AS inputs FROM batch_inputs"
                     " GROUP BY batch_id")
    split = db_rows(workdir, "SELECT input_id, COUNT(DISTINCT part) AS parts FROM batch_inputs"
                    " GROUP BY input_id HAVING parts > 1")
    return {"problems": problems, "stats": {
        "files": len(specs), "delivered": delivered, "rejected": rejected,
        "batches": len(batches), "packed_batches": sum(1 for b in shapes if b["inputs"] > 1),
        "split_inputs": {r["input_id"]: r["parts"] for r in split},
        "remote_jobs": len(jobs),
        "remote_statuses": dict(Counter(j["status"] for j in jobs))}}
