"""`check-config --config PATH [--online]`: is the config usable, are its folders, and is a
bearer token available (and, with --online, accepted by X)?"""

from __future__ import annotations

import argparse
import sys

import anyio

from orchestrator.cli.common import quiet_logging
from orchestrator.config import load_config
from orchestrator.credentials import bearer_token_source, load_bearer_token
from orchestrator.daemon.preflight import Reach, check_folders, probe_api
from orchestrator.errors import ConfigError, ExitCode


def check_config_command(args: argparse.Namespace) -> int:
    """0 and a summary if usable; 2 for a bad config, an unusable folder or (--online) a
    refused token; 1 (--online) when X cannot be reached."""
    quiet_logging()  # stdout is the summary: the probe's request log stays out of it
    try:
        config = load_config(args.config)
        source = bearer_token_source(config)
        check_folders(config)
        token = load_bearer_token(config) if getattr(args, "online", False) else None
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    online = None
    if token is not None:
        online = anyio.run(probe_api, config, token)
        if online.reach is Reach.REFUSED:
            print(f"token refused: {online.detail}; put a valid token in {source} "
                  "(see INSTALL.md, token rotation)", file=sys.stderr)
            return ExitCode.USAGE
        if online.reach is Reach.UNREACHABLE:
            print(f"X unreachable: {online.detail}", file=sys.stderr)
            return ExitCode.FAILURE
    health = (
        f"http://{config.health.host}:{config.health.port}/healthz"
        if config.health.enabled
        else "disabled"
    )
    print(f"config OK: {args.config}")
    summary = {
        "inbox": config.paths.inbox,
        "outbox": config.paths.outbox,
        "state_dir": config.paths.state_dir,
        "api": config.api.base_url,
        "token from": source,
        "concurrency": config.jobs.concurrency,
        "log": f"{config.log.level}, {config.log.format}",
        "health": health,
    }
    if online is not None:
        summary["online"] = f"{online.reach}: {online.detail}"
    for label, value in summary.items():
        print(f"  {label + ':':<13}{value}")
    return ExitCode.OK
