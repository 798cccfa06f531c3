"""Shared pieces of the benchmarks: figures, ID files, the sandbox and the daemon as processes.

The daemon always runs as `python -m orchestrator run --config PATH` in its own process (its
peak RSS is read from /proc/<pid>/status VmHWM) and the sandbox as `python -m orchestrator
sandbox` in another (SandboxProcess), so neither shares a GIL with the other or with the
benchmark that measures them. Everything lives in one temp folder under /tmp.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator.sandbox import SandboxProcess

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CACHE_DIR = Path("/tmp/compliance-bench-cache")  # the generated ID files, kept between runs
FIRST_ID = 1_200_000_000_000_000_000  # 19-digit, snowflake-sized IDs
ID_STEP = 9_999_991  # spreads the IDs over a wide range (the sandbox picks ~10% by hash)


class Skipped(Exception):
    """Raised by a benchmark whose prerequisites are missing (run.py says so, no failure)."""


# ---- figures --------------------------------------------------------------------------------


@dataclass
class Figure:
    """One row of the table: a measured value, its same-run baseline and the target."""

    key: str
    measure: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    ratio: float | None = None
    target: str = ""
    passed: bool | None = None  # None: informational, no target
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key, "measure": self.measure, "value": self.value, "unit": self.unit,
            "baseline": self.baseline, "baseline_label": self.baseline_label,
            "ratio": self.ratio, "target": self.target, "passed": self.passed,
            "note": self.note, **({"extra": self.extra} if self.extra else {}),
        }


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "IDs/s":
        return f"{value / 1e6:.2f}M IDs/s"
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "calls":
        return f"{value:g} calls"
    if unit == "MB/s":
        return f"{value:.0f} MB/s"
    return f"{value:g} {unit}".strip()


# ---- workspace and ID files -----------------------------------------------------------------


def make_workspace(keep: bool) -> tuple[Path, Callable[[], None]]:
    path = Path(tempfile.mkdtemp(prefix="compliance-bench-", dir="/tmp"))

    def cleanup() -> None:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)

    return path, cleanup


def id_lines(first: int, count: int, step: int = ID_STEP) -> bytes:
    """`count` distinct IDs, one per line (`\\n`), as a well-behaved producer writes them."""
    return ("%d\n" * count % tuple(range(first, first + count * step, step))).encode()


def write_ids(path: Path, count: int, *, first: int = FIRST_ID, block: int = 200_000) -> Path:
    """Write `count` IDs to `path` in blocks (memory stays small whatever the count)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        done = 0
        while done < count:
            n = min(block, count - done)
            out.write(id_lines(first + done * ID_STEP, n))
            done += n
    tmp.rename(path)
    return path


def cached_id_file(count: int) -> Path:
    """The shared `count`-ID file in CACHE_DIR, generated once (20 bytes per ID)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / f"ids-{count}.txt"
    if not path.exists() or path.stat().st_size != 20 * count:
        write_ids(path, count)
    return path


def warm(path: Path) -> None:
    """Read a file once so every timed reader finds it in the page cache alike."""
    with open(path, "rb", buffering=0) as handle:
        while handle.read(8 << 20):
            pass


# ---- daemon configuration -------------------------------------------------------------------

# The shipped defaults (config.example.toml) for everything that decides timing.
DEFAULT_SETTINGS: dict[str, Any] = {
    "inbox.min_age_s": 2.0,
    "inbox.rescan_interval_s": 5.0,
    "inbox.use_watcher": True,
    "jobs.pack_files": True,
    "jobs.pack_quiet_s": 1.0,
    "jobs.pack_wait_s": 60.0,
    "poll.initial_interval_s": 5.0,
    "poll.max_interval_s": 60.0,
    "poll.backoff_factor": 1.5,
    "poll.rate_reserve": 10,
}
# Tuned but realistic: producers write `name.part` and rename (the documented protocol), so a
# renamed-in file is complete and the quiet period only has to outlast the rename's own
# events (50 ms); the first poll comes soon and backs off to the same 60 s cap.
# A pack is formed 0.1 s after the claim pass (files renamed within one scan still share it).
TUNED_SETTINGS: dict[str, Any] = {
    **DEFAULT_SETTINGS,
    "inbox.min_age_s": 0.05,
    "poll.initial_interval_s": 0.25,
    "jobs.pack_quiet_s": 0.1,
}


def describe_settings(settings: dict[str, Any]) -> str:
    changed = {k: v for k, v in settings.items() if DEFAULT_SETTINGS.get(k) != v}
    if not changed:
        return "default config"
    return ", ".join(f"{k}={v}" for k, v in changed.items())


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def write_config(workdir: Path, base_url: str, settings: dict[str, Any]) -> Path:
    sections: dict[str, dict[str, Any]] = {
        "api": {"base_url": base_url},
        "paths": {"inbox": "inbox", "outbox": "outbox", "state_dir": "state",
                  "create_missing": True},
        "log": {"level": "info", "format": "json"},
    }
    for dotted, value in settings.items():
        section, key = dotted.split(".", 1)
        sections.setdefault(section, {})[key] = value
    text = "".join(
        f"[{name}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in keys.items()) + "\n"
        for name, keys in sections.items()
    )
    path = workdir / "config.toml"
    path.write_text(text)
    return path


# ---- processes ------------------------------------------------------------------------------


@contextmanager
def sandbox(workdir: Path, *args: str) -> Iterator[SandboxProcess]:
    """The sandbox CLI as a child process; its JSON request log in workdir/sandbox.log."""
    workdir.mkdir(parents=True, exist_ok=True)
    proc = SandboxProcess(
        ["--data-dir", str(workdir / "sandbox-data"), *args],
        log_file=workdir / "sandbox.log",
    )
    with proc:
        yield proc


def read_kib(pid: int, field_name: str) -> int:
    """A `VmHWM:`-style field of /proc/<pid>/status, in KiB (0 if the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


class Daemon:
    """`python -m orchestrator run --config PATH` as a child process, logging to a file."""

    def __init__(self, workdir: Path, base_url: str, token: str,
                 settings: dict[str, Any]) -> None:
        self.workdir = workdir
        self.config = write_config(workdir, base_url, settings)
        self.token = token
        self.log_path = workdir / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.idle_hwm_kib = 0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 30.0) -> Daemon:
        env = {**os.environ, "X_BEARER_TOKEN": self.token}
        env.pop("CREDENTIALS_DIRECTORY", None)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [PYTHON, "-m", "orchestrator", "run", "--config", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, env=env,
            )
        wait_until(lambda: self.logged("service.ready"), timeout, "daemon ready",
                   alive=self.process)
        self.idle_hwm_kib = read_kib(self.pid, "VmHWM")
        return self

    def logged(self, event: str) -> bool:
        try:
            return f'"{event}"' in self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return False

    def hwm_mb(self) -> float:
        return read_kib(self.pid, "VmHWM") / 1024

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if f'"{name}"' in line:
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                if item.get("event") == name:
                    found.append(item)
        return found

    def stop(self, timeout: float = 30.0) -> int:
        if self.process is None:
            return 0
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until(condition: Callable[[], bool], timeout: float, what: str, *,
               interval: float = 0.005,
               alive: subprocess.Popen[bytes] | None = None) -> float:
    """Poll `condition` until true; returns the time.monotonic() at which it was seen."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return time.monotonic()
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"process exited with {alive.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# ---- inbox and outbox -----------------------------------------------------------------------


def stage(workdir: Path, name: str, data: bytes | Path, job_type: str = "tweets") -> Path:
    """Write `inbox/<type>/<name>.part` (ignored by the daemon); `drop()` renames it in."""
    folder = workdir / "inbox" / job_type
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f"{name}.part"
    if isinstance(data, Path):
        shutil.copyfile(data, part)
    else:
        part.write_bytes(data)
    return part


def drop(part: Path) -> float:
    """Rename a staged file into place (the producer's last step); returns when, monotonic."""
    part.rename(part.with_suffix(""))
    return time.monotonic()


def manifest_path(workdir: Path, name: str, job_type: str = "tweets") -> Path:
    return workdir / "outbox" / job_type / f"{Path(name).stem}.manifest.json"


def rejected(workdir: Path) -> list[str]:
    folder = workdir / "outbox" / "rejected"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# ---- the sandbox's request log --------------------------------------------------------------

API_ENDPOINTS = ("create", "get", "list")


def endpoint_of(method: str, path: str) -> str:
    """Classify a logged request like the sandbox's rate limiter buckets them."""
    if path.startswith("/2/compliance/jobs"):
        if method == "POST":
            return "create"
        return "get" if path.rstrip("/") != "/2/compliance/jobs" else "list"
    return "storage"


def count_calls(requests: list[tuple[str, str, int]]) -> dict[str, int]:
    counts = dict.fromkeys((*API_ENDPOINTS, "storage", "429"), 0)
    for method, path, status in requests:
        counts[endpoint_of(method, path)] += 1
        if status == 429:
            counts["429"] += 1
    return counts


def sandbox_log(workdir: Path) -> list[dict[str, Any]]:
    """The sandbox's `sandbox.request` lines, each with `at` (epoch seconds, end of request)."""
    rows = []
    for line in (workdir / "sandbox.log").read_text(errors="replace").splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if item.get("event") == "sandbox.request":
            item["at"] = datetime.fromisoformat(item["timestamp"]).timestamp()
            rows.append(item)
    return rows


def machine_info() -> dict[str, str]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "ram": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "python": sys.version.split()[0],
        "load_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
