"""Helpers for the resilience and torture tests: config tweaks, log capture through the
production logging chain, counting the sandbox's requests per endpoint, and the daemon as a
subprocess."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
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
    an existing key is replaced, a missing one is added to its section."""
    path = write_config(workdir, base_url, **overrides)
    if not extra:
        return path
    lines = path.read_text().splitlines()
    for section, values in extra.items():
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
