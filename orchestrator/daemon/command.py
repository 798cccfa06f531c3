"""`compliance-orchestrator run`: the daemon as a process, from config to exit status.

Signals become Service calls (SIGTERM/SIGINT stop, SIGHUP reloads); a damaged database or a
config problem ends with its own exit status and one line saying what to do.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import TypeVar

import anyio
import structlog

from orchestrator.config import load_config
from orchestrator.credentials import load_bearer_token, warn_if_token_file_readable
from orchestrator.daemon.service import Service
from orchestrator.errors import ConfigError, ExitCode, LeaseLost
from orchestrator.logs import configure_logging
from orchestrator.store.migrate import CorruptDatabase
from orchestrator.store.postgresql import StoreUnavailable

log = structlog.get_logger(__name__)


async def _run_until_signal(service: Service) -> None:
    async with anyio.create_task_group() as group:

        async def watch_signals() -> None:
            with anyio.open_signal_receiver(
                signal.SIGTERM, signal.SIGINT, signal.SIGHUP
            ) as signals:
                async for received in signals:
                    log.info("service.signal", signal=signal.Signals(received).name)
                    if received == signal.SIGHUP:
                        await service.reload()
                    else:
                        service.stop()  # a second one cuts the grace period short

        group.start_soon(watch_signals)
        await service.run()
        group.cancel_scope.cancel()


def run_command(args: argparse.Namespace) -> int:
    config_path: Path = args.config
    try:
        config = load_config(config_path)
        token = load_bearer_token(config)
    except ConfigError as error:
        print(f"compliance-orchestrator: {error}", file=sys.stderr)
        return ExitCode.USAGE
    configure_logging(config.log.level, config.log.format, secrets=(token,))
    warn_if_token_file_readable(config)
    try:
        anyio.run(_run_until_signal, Service(config, token))
    except Exception as error:
        corrupt = _error_in(error, CorruptDatabase)
        if corrupt is not None:
            # One line with what to do, no traceback: the file is damaged, not the code.
            log.error("service.state_corrupt", file=str(corrupt.db_path),
                      backup=str(corrupt.backup) if corrupt.backup else None,
                      error=type(corrupt).__name__, error_msg=corrupt.cause,
                      exit_status=int(ExitCode.STATE_CORRUPT), detail=str(corrupt))
            print(f"compliance-orchestrator: {corrupt}", file=sys.stderr)
            return ExitCode.STATE_CORRUPT
        lost = _error_in(error, LeaseLost)
        if lost is not None:  # cluster.py said why; systemd restarts us as a standby
            log.error("service.lease_lost", error_msg=str(lost),
                      exit_status=int(ExitCode.FAILURE))
            return ExitCode.FAILURE
        unavailable = _error_in(error, StoreUnavailable)
        if unavailable is not None:  # the database is down, not the config: restart, retry
            log.error("service.store_unavailable", error_msg=str(unavailable),
                      exit_status=int(ExitCode.FAILURE))
            print(f"compliance-orchestrator: {unavailable}", file=sys.stderr)
            return ExitCode.FAILURE
        config_error = _error_in(error, ConfigError)
        if config_error is not None:  # e.g. the state directory is locked, schema too new
            log.error("service.config_error", error=type(config_error).__name__,
                      error_msg=str(config_error))
            print(f"compliance-orchestrator: {config_error}", file=sys.stderr)
            return ExitCode.USAGE
        log.exception("service.crashed", error=type(error).__name__)
        return ExitCode.FAILURE
    return ExitCode.OK


_E = TypeVar("_E", bound=BaseException)


def _error_in(error: BaseException, kind: type[_E]) -> _E | None:
    """Task groups wrap errors in exception groups; find one of `kind` inside."""
    if isinstance(error, kind):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _error_in(inner, kind)
            if found is not None:
                return found
    return None
