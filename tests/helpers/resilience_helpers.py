"""Helpers for the resilience and torture tests: config tweaks, log capture through the
production logging chain, counting the sandbox's requests per endpoint, and the daemon as a
subprocess."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from daemon_helpers import TOKEN, outcome, running_service, write_config

from orchestrator.config import Config
from orchestrator.daemon.service import Service
from orchestrator.logs import configure_logging, reset_logging
from orchestrator.sandbox import Sandbox

# Strings that must never reach a log line (the sandbox's signed URLs carry the first two).
SECRET_MARKERS = ("X-Goog-Signature", "upload_id=", TOKEN)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def write_config_ex(
    workdir: Path, base_url: str, *, extra: dict[str, dict[str, Any]] | None = None,
    **overrides: Any,
) -> Path:
    """`daemon_helpers.write_config`, plus keys its template has no placeholder for
    (e.g. `extra={"jobs": {"download_margin_s": 1.0}, "api": {"read_timeout_s": 1.0}}`):
    an existing key is replaced, a missing one is added to its section (and a missing
    section at the end)."""
    path = write_config(workdir, base_url, **overrides)
    if not extra:
        return path
    lines = path.read_text().splitlines()
    for section, values in extra.items():
        if f"[{section}]" not in lines:
            lines.append(f"[{section}]")
        header = lines.index(f"[{section}]")
        end = next((i for i in range(header + 1, len(lines)) if lines[i].startswith("[")),
                   len(lines))
        for key, value in values.items():
            line = f"{key} = {_toml(value)}"
            found = [i for i in range(header + 1, end)
                     if re.match(rf"{re.escape(key)}\s*=", lines[i])]
            if found:
                lines[found[0]] = line
            else:
                lines.insert(header + 1, line)
                end += 1
    path.write_text("\n".join(lines) + "\n")
    return path


class LogTap:
    """Everything logged in this process, rendered by the daemon's own JSON chain."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    @staticmethod
    def parse(line: str) -> dict[str, Any] | None:
        """One JSON log line, or None for anything else (e.g. a line cut by a kill)."""
        if not line.startswith("{"):
            return None
        try:
            parsed = json.loads(line)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None

    def records(self) -> list[dict[str, Any]]:
        return [r for line in self.text.splitlines() if (r := self.parse(line)) is not None]

    def events(self, name: str | None = None, *, level: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.records()
                if (name is None or r.get("event") == name)
                and (level is None or r.get("level") == level)]

    def daemon_records(self) -> list[dict[str, Any]]:
        """Without the sandbox's own lines (it runs in this process too)."""
        return [r for r in self.records() if not str(r.get("event", "")).startswith("sandbox.")]


@contextmanager
def tap_logs() -> Iterator[LogTap]:
    tap = LogTap()
    configure_logging("debug", "json", stream=tap.stream, secrets=(TOKEN,))
    try:
        yield tap
    finally:
        reset_logging()


def endpoint_of(method: str, path: str) -> str:
    """The sandbox's endpoint name of a logged request."""
    if path == "/2/compliance/jobs":
        return "create" if method == "POST" else "list"
    if path.startswith("/2/compliance/jobs/"):
        return "get"
    if "/submission/" in path:
        return "upload"
    if "/delivery/" in path:
        return "download"
    return "other"


def requests_to(sb: Sandbox, endpoint: str) -> list[tuple[str, str, int]]:
    return [entry for entry in sb.request_log if endpoint_of(entry[0], entry[1]) == endpoint]


def statuses(sb: Sandbox, endpoint: str) -> list[int]:
    return [status for _method, _path, status in requests_to(sb, endpoint)]


def error_doc(workdir: Path, name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (workdir / "outbox" / "rejected" / f"{name}.error.json").read_text())
    return loaded


def manifest(workdir: Path, job_type: str, stem: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (workdir / "outbox" / job_type / f"{stem}.manifest.json").read_text())
    return loaded


def daemon(config: Config, token: str = TOKEN, *, crash: bool = False
           ) -> AbstractAsyncContextManager[Service]:
    """The daemon in this event loop until the block ends. `crash=True` ends it without the
    grace period (steps in flight are cancelled, as a kill would cut them), otherwise it
    stops like on SIGTERM."""
    return running_service(config, token, crash=crash)


def settled(workdir: Path, job_type: str, *names: str) -> bool:
    """Every named input has an outcome and nothing is left in the spool."""
    return all(outcome(workdir, job_type, name) is not None for name in names) and (
        spool_empty(workdir))


def when(record: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(record["timestamp"]).replace("Z", "+00:00"))


def spool_empty(workdir: Path) -> bool:
    spool = workdir / "state" / "spool"
    return not spool.exists() or not any(spool.iterdir())


def spawn_daemon(config_path: Path, log_path: Path, token: str = TOKEN) -> subprocess.Popen[bytes]:
    """`python -m orchestrator run` with the token in the environment, output appended to
    `log_path` (stdout and stderr alike, as journald would collect them)."""
    env = {**os.environ, "X_BEARER_TOKEN": token}
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM",
                 "CREDENTIALS_DIRECTORY"):
        env.pop(name, None)
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "run", "--config", str(config_path)],
            env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )


# --- hostile inbox entries and reading the outbox without trusting it (torture) -------------

ERROR_SUFFIX = ".error.json"


def entry_kind(path: Path) -> str:
    """What `path` is, by lstat (never followed, never opened)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return "missing"
    for kind, test in (("symlink", stat.S_ISLNK), ("fifo", stat.S_ISFIFO),
                       ("directory", stat.S_ISDIR), ("file", stat.S_ISREG)):
        if test(mode):
            return kind
    return "other"


def read_json_entry(path: Path, limit: int = 1 << 20) -> dict[str, Any] | None:
    """The JSON object in `path` if it is a regular file; a symlink is not followed and a fifo
    is not read (a test must not wedge where the daemon must not either)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        data = handle.read(limit)
    try:
        loaded = json.loads(data)
    except ValueError:
        return None
    return loaded if isinstance(loaded, dict) else None


@dataclass(frozen=True)
class Rejection:
    entry: str  # its name in outbox/rejected/
    kind: str  # what that entry is (entry_kind)
    doc: dict[str, Any]


def rejections(workdir: Path) -> tuple[dict[str, list[Rejection]], list[str]]:
    """The daemon's rejections by original (display) name, and the names in outbox/rejected/
    that are neither one of its records nor the entry such a record names."""
    folder = workdir / "outbox" / "rejected"
    names = {p.name for p in folder.iterdir()} if folder.exists() else set()
    found: dict[str, list[Rejection]] = {}
    explained: set[str] = set()
    for name in sorted(names):
        if not name.endswith(ERROR_SUFFIX):
            continue
        doc = read_json_entry(folder / name)
        entry = name[: -len(ERROR_SUFFIX)]
        if doc is None or doc.get("file") != entry:
            continue  # not a record of ours (e.g. a rejected entry named like one)
        explained |= {name, entry}
        original = str(doc.get("original_name") or entry)
        found.setdefault(original, []).append(Rejection(entry, entry_kind(folder / entry), doc))
    return found, sorted(names - explained)


@dataclass(frozen=True)
class Delivery:
    job_type: str
    stem: str
    manifest: dict[str, Any]

    @property
    def file(self) -> str:
        return str(self.manifest.get("input", {}).get("file"))

    @property
    def sha256(self) -> str | None:
        value = self.manifest.get("input", {}).get("sha256")
        return None if value is None else str(value)


def deliveries(workdir: Path) -> list[Delivery]:
    """Every result set in the outbox, by its manifest (written last, so complete)."""
    found = []
    for job_type in ("tweets", "users"):
        folder = workdir / "outbox" / job_type
        if not folder.exists():
            continue
        for path in sorted(folder.glob("*.manifest.json")):
            doc = read_json_entry(path)
            if doc is not None:
                found.append(Delivery(job_type, path.name[: -len(".manifest.json")], doc))
    return found


def result_rows(workdir: Path, job_type: str, stem: str) -> list[dict[str, Any]]:
    """The delivered rows as a list: X may answer one ID with two rows."""
    path = workdir / "outbox" / job_type / f"{stem}.jsonl"
    with open(path, "rb") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def make_fifo(folder: Path, name: str | bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / os.fsdecode(name)  # bytes: undecodable bytes survive as surrogates
    os.mkfifo(path)
    return path


def drop_raw(folder: Path, name: str | bytes, data: bytes) -> None:
    """A well-behaved producer (`.part`, then rename) with any name, also a non-UTF-8 one."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / os.fsdecode(name)  # bytes: undecodable bytes survive as surrogates
    part = final.with_name(final.name + ".part")
    part.write_bytes(data)
    part.rename(final)


def write_growing(path: Path, bursts: list[bytes], pause_s: float) -> None:
    """A careless producer: writes straight to the final name (no `.part`), in bursts with
    pauses longer than the inbox's quiet period, through one descriptor, so bursts after a
    claim land in the claimed inode. Blocking: run it in a thread."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        for n, burst in enumerate(bursts):
            if n:
                time.sleep(pause_s)
            os.write(fd, burst)
    finally:
        os.close(fd)
