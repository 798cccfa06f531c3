"""`check-config --config PATH [--online]`: is the config usable, are its folders, and is a
bearer token available (and, with --online, accepted by X; and a PostgreSQL store reachable,
read-only)?"""

from __future__ import annotations

import argparse
import sys

import anyio

from orchestrator.cli.common import quiet_logging
from orchestrator.config import Config, load_config
from orchestrator.credentials import bearer_token_source, db_password_source, load_bearer_token
from orchestrator.daemon.preflight import Reach, check_folders, probe_api
from orchestrator.errors import ConfigError, ExitCode
from orchestrator.layout import Layout
from orchestrator.store import reports
from orchestrator.store.opening import DATABASE_ERRORS
from orchestrator.store.postgresql import StoreUnavailable


def _store_summary(config: Config) -> str:
    """The backend and where it is; for PostgreSQL, where the password comes from (read, so a
    missing password file is a config error; never shown)."""
    if config.store.backend != "postgresql":
        return f"sqlite, {Layout.from_config(config).db_path}"
    from orchestrator.store.postgresql import describe_dsn

    return (f"postgresql, {describe_dsn(config.store.dsn)}, password from "
            f"{db_password_source(config.store)}")


def _probe_store(config: Config) -> str:
    """--online on PostgreSQL: can we connect and read (read-only, nothing created)?"""
    with reports.open_reports(Layout.from_config(config)) as reader:
        if reader is None:
            return ("reachable; no tables yet (a daemon creates them when it first starts, or"
                    " `migrate`)")
        return f"reachable; schema version {reader.schema_version()}"


def check_config_command(args: argparse.Namespace) -> int:
    """0 and a summary if usable; 2 for a bad config, an unusable folder or (--online) a
    refused token; 1 (--online) when X, or the PostgreSQL store, cannot be reached."""
    quiet_logging()  # stdout is the summary: the probe's request log stays out of it
    try:
        config = load_config(args.config)
        source = bearer_token_source(config)
        check_folders(config)
        store = _store_summary(config)
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
    database = None
    if token is not None and config.store.backend == "postgresql":
        try:
            database = _probe_store(config)
        except StoreUnavailable as exc:
            print(f"store unreachable: {exc}", file=sys.stderr)
            return ExitCode.FAILURE
        except DATABASE_ERRORS as exc:
            print(f"store unreadable: {' '.join(str(exc).split())}", file=sys.stderr)
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
        "store": store,
        "concurrency": config.jobs.concurrency,
        "log": f"{config.log.level}, {config.log.format}",
        "health": health,
    }
    if online is not None:
        summary["online"] = f"{online.reach}: {online.detail}"
    if database is not None:
        summary["database"] = database
    for label, value in summary.items():
        print(f"  {label + ':':<13}{value}")
    return ExitCode.OK
