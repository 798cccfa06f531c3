"""`demo`: the sandbox and the real daemon in one process, sample files in, a summary out.

Nothing is faked on the daemon side: it reads a real config file, claims files from a real
inbox, talks HTTP to the sandbox on 127.0.0.1 and writes a real outbox. Its JSON log goes
to `<workdir>/daemon.log` so the summary stays readable.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path
from typing import Any

import anyio

from orchestrator.clock import SystemClock
from orchestrator.config import load_config
from orchestrator.core.model import JobType
from orchestrator.daemon.service import Service
from orchestrator.errors import ExitCode
from orchestrator.files.rejected import ERROR_SUFFIX
from orchestrator.layout import Layout
from orchestrator.logs import configure_logging
from orchestrator.sandbox import Sandbox, SandboxConfig

SAMPLES: list[tuple[JobType, str, int, bool]] = [
    # (type, file name, number of IDs, with a bad line)
    (JobType.TWEETS, "tweets-2026-11-a.txt", 500, False),
    (JobType.TWEETS, "tweets-2026-11-b.txt", 1200, False),
    (JobType.USERS, "users-2026-11.txt", 300, False),
    (JobType.USERS, "users-typo.txt", 40, True),
]

CONFIG_TEMPLATE = """\
# Written by `compliance-orchestrator demo`; see config.example.toml for every key.
[api]
base_url = "{base_url}"

[paths]
inbox = "inbox"
outbox = "outbox"
state_dir = "state"
create_missing = true

[inbox]
min_age_s = 0.2
rescan_interval_s = 1.0

[poll]
initial_interval_s = 0.5
max_interval_s = 2.0

[log]
level = "info"
format = "json"
"""


def _sample_ids(rng: random.Random, count: int, job_type: JobType) -> list[str]:
    if job_type is JobType.TWEETS:  # snowflake-sized
        return [str(rng.randrange(10**18, 2 * 10**18)) for _ in range(count)]
    return [str(rng.randrange(10**6, 2 * 10**18)) for _ in range(count)]


def _drop(inbox: Path, job_type: JobType, name: str, lines: list[str]) -> None:
    """The inbox contract: write `name.part`, then rename into place."""
    folder = inbox / str(job_type)
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f"{name}.part"
    part.write_text("\n".join(lines) + "\n")
    part.rename(folder / name)


def _outcome(layout: Layout, job_type: JobType, name: str) -> dict[str, Any] | None:
    manifest = layout.manifest_path(job_type, Path(name).stem)
    if manifest.exists():
        return {"outcome": "delivered", **json.loads(manifest.read_text())}
    error = layout.rejected / f"{name}{ERROR_SUFFIX}"
    if error.exists():
        return {"outcome": "rejected", **json.loads(error.read_text())}
    return None


async def _demo(workdir: Path, timeout: float) -> int:
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = (workdir / "daemon.log").resolve()
    log_file = open(log_path, "a", encoding="utf-8")  # noqa: SIM115, ASYNC230
    rng = random.Random(2026)
    sandbox_config = SandboxConfig(processing_time_s=1.0, affected_fraction=0.15, seed=7)
    clock = SystemClock()
    started = clock.monotonic()
    configure_logging("info", "json", stream=log_file, secrets=(sandbox_config.token,))
    try:
        async with Sandbox(sandbox_config) as sandbox:
            config_path = workdir / "config.toml"
            config_path.write_text(CONFIG_TEMPLATE.format(base_url=sandbox.base_url))
            config = load_config(config_path)
            layout = Layout.from_config(config)
            service = Service(config, sandbox.token, clock=clock)
            print(f"demo: work folder {workdir}")
            print(f"demo: sandbox X API at {sandbox.base_url}; daemon log (in the work folder)"
                  f" {log_path}")
            submitted: dict[str, list[str]] = {}
            async with anyio.create_task_group() as group:
                ready = anyio.Event()
                group.start_soon(lambda: service.run(on_ready=ready.set))
                await ready.wait()
                for job_type, name, count, bad in SAMPLES:
                    ids = _sample_ids(rng, count, job_type)
                    lines = [*ids[:10], "12345abc", *ids[10:]] if bad else ids
                    submitted[name] = ids
                    _drop(layout.inbox, job_type, name, lines)
                    print(
                        f"demo: dropped inbox/{job_type}/{name} ({count} IDs"
                        f"{', one bad line' if bad else ''})"
                    )
                outcomes: dict[str, dict[str, Any]] = {}
                with anyio.move_on_after(timeout):
                    while len(outcomes) < len(SAMPLES):
                        for job_type, name, _, _ in SAMPLES:
                            if name not in outcomes:
                                found = _outcome(layout, job_type, name)
                                if found is not None:
                                    outcomes[name] = found
                        await anyio.sleep(0.2)
                service.stop()
            return _summarise(
                workdir, layout, sandbox, submitted, outcomes, clock.monotonic() - started
            )
    finally:
        log_file.close()


def _summarise(
    workdir: Path,
    layout: Layout,
    sandbox: Sandbox,
    submitted: dict[str, list[str]],
    outcomes: dict[str, dict[str, Any]],
    elapsed: float,
) -> int:
    print()
    print(f"{'file':24} {'type':6} {'outcome':9} {'IDs':>5} {'affected':>8}  detail")
    ok = True
    for job_type, name, _, _ in SAMPLES:
        found = outcomes.get(name)
        if found is None:
            ok = False
            print(f"{name:24} {job_type!s:6} {'PENDING':9} {'':>5} {'':>8}  no outcome in time")
            continue
        if found["outcome"] == "delivered":
            counts = found["counts"]
            results = layout.results_path(job_type, Path(name).stem)
            got = {json.loads(line)["id"] for line in results.read_text().splitlines() if line}
            expected = set(sandbox.expected_results(job_type, submitted[name]))
            match = "matches sandbox truth" if got == expected else "MISMATCH with sandbox"
            ok = ok and got == expected
            reasons = ", ".join(f"{k} {v}" for k, v in counts["by_reason"].items())
            print(
                f"{name:24} {job_type!s:6} {'delivered':9} {counts['submitted']:>5}"
                f" {counts['affected']:>8}  {reasons}; {match}"
            )
        else:
            print(f"{name:24} {job_type!s:6} {'rejected':9} {'':>5} {'':>8}  {found['message']}")
    jobs = sandbox.jobs()
    print()
    print(f"remote jobs created: {len(jobs)} (one at a time); took {elapsed:.1f} s")
    print(f"results:  {layout.outbox}/<type>/<name>.jsonl + .manifest.json")
    print(f"rejected: {layout.rejected}/<name> + <name>{ERROR_SUFFIX}")
    print(f"status:   compliance-orchestrator status --config {workdir / 'config.toml'}")
    return ExitCode.OK if ok else ExitCode.FAILURE


def run_command(args: argparse.Namespace) -> int:
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="compliance-demo-"))
    return anyio.run(_demo, workdir.resolve(), args.timeout)
