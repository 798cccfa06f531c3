"""Preflight: are the configured folders usable, and does X accept the token?

Used by `check-config` (offline, and `--online`) and by the daemon before READY. A folder
problem names the config key and the path; a refused token is fatal (exit 2: systemd does
not restart on it), an unreachable X is not (the outage handling of the runner covers it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import anyio
import structlog

from orchestrator.config import Config
from orchestrator.core.model import JobType
from orchestrator.errors import AuthError, ConfigError, RateLimited, RemoteError
from orchestrator.remote.xapi import XApi, make_session

log = structlog.get_logger(__name__)


def configured_folders(config: Config) -> list[tuple[str, Path]]:
    paths = config.paths
    folders = [("paths.inbox", paths.inbox), ("paths.outbox", paths.outbox),
               ("paths.state_dir", paths.state_dir)]
    if paths.spool_dir is not None:
        folders.append(("paths.spool_dir", paths.spool_dir))
    return folders


def folder_problem(key: str, folder: Path, create_missing: bool) -> str | None:
    """Why `folder` cannot be used, or None. A missing folder is fine only when it will be
    created: create_missing is on and its nearest existing ancestor is a writable folder."""
    if folder.exists():
        if not folder.is_dir():
            return f"{key} ({folder}) is not a directory"
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"{key} ({folder}) is not writable by this user"
        return None
    parent = folder.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():  # under a regular file: no setting makes that usable
        return f"{key} ({folder}) cannot be created: {parent} is not a directory"
    if not create_missing:
        return (f"{key} ({folder}) does not exist; create it, fix the path, or set "
                "paths.create_missing = true")
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{key} ({folder}) cannot be created: {parent} is not writable by this user"
    return None


def check_folders(config: Config) -> None:
    """Raise ConfigError naming every unusable configured folder."""
    problems = [problem for key, folder in configured_folders(config)
                if (problem := folder_problem(key, folder, config.paths.create_missing))]
    if problems:
        raise ConfigError("; ".join(problems))


class Reach(StrEnum):
    OK = "ok"
    REFUSED = "refused"  # 401/403: the token is wrong, revoked or lacks access
    UNREACHABLE = "unreachable"  # no answer, or a transient error (5xx, timeout, reset)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    reach: Reach
    detail: str


async def probe(xapi: XApi) -> ProbeResult:
    """One cheap authenticated call (list the tweets jobs). Error texts are the client's
    redacted ones: neither the token nor a signed URL reaches them."""
    try:
        jobs = await xapi.list_jobs(JobType.TWEETS)
    except AuthError as error:
        return ProbeResult(Reach.REFUSED, f"X refused the bearer token: {error}")
    except RateLimited:
        # A 429 comes after authentication: the token works, the window is spent.
        return ProbeResult(Reach.OK, "token accepted; the rate window is exhausted")
    except RemoteError as error:
        return ProbeResult(Reach.UNREACHABLE, f"X API not usable: {error}")
    return ProbeResult(Reach.OK, f"token accepted; {len(jobs)} tweets job(s) listed")


async def probe_api(config: Config, token: str) -> ProbeResult:
    """`probe` with a session of its own (check-config)."""
    timeout = config.api.connect_timeout_s
    async with make_session(timeout, max(timeout, 10.0)) as http:
        return await probe(XApi(http, config.api.base_url, token))


async def probe_at_start(xapi: XApi, connect_timeout_s: float) -> None:
    """The daemon's one authenticated call before READY (on the leader): a refused token ends
    the start (exit 2, which systemd does not restart); an unreachable X only warns, the
    runner rides it out."""
    with anyio.move_on_after(connect_timeout_s + 10.0) as scope:
        result = await probe(xapi)
    if scope.cancelled_caught:
        log.warning("service.api_unreachable", detail="no answer from the X API at start-up")
    elif result.reach is Reach.REFUSED:
        raise ConfigError(f"{result.detail}; replace the bearer token and restart")
    elif result.reach is Reach.UNREACHABLE:
        log.warning("service.api_unreachable", detail=result.detail)
    else:
        log.info("service.api_ok", detail=result.detail)
