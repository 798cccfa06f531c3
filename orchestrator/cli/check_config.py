"""`check-config --config PATH`: is the config usable and a bearer token available?"""

from __future__ import annotations

import argparse
import sys

from orchestrator.config import load_config
from orchestrator.credentials import bearer_token_source
from orchestrator.errors import ConfigError, ExitCode


def check_config_command(args: argparse.Namespace) -> int:
    """`check-config --config PATH`: 0 and a summary if usable, else the error and 2."""
    try:
        config = load_config(args.config)
        source = bearer_token_source(config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
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
    for label, value in summary.items():
        print(f"  {label + ':':<13}{value}")
    return ExitCode.OK
