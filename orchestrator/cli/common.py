"""Shared plumbing of the operator commands (`jobs`, `requeue`, `retry`, `cancel`, `migrate`).

Each command does its work in a function that returns a result dict plus a human text, or
raises AdminError with the exit code; `run_admin` turns that into output and an exit code,
the same way for every command: a table/sentences by default, one JSON object with `--json`.
Log lines never go to stdout here (it is the command's answer): they go to stderr, warnings
and up only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from orchestrator.cli.status import daemon_pid
from orchestrator.clock import SystemClock, rfc3339
from orchestrator.config import load_config
from orchestrator.core.hooks import HookTarget
from orchestrator.daemon.lock import lock_file_name
from orchestrator.errors import ConfigError, OrchestratorError
from orchestrator.layout import Layout
from orchestrator.logs import configure_logging
from orchestrator.store.migrate import MigrationError, connect, pending_migrations
from orchestrator.store.opening import DATABASE_ERRORS
from orchestrator.store.postgresql import StoreUnavailable
from orchestrator.store.sqlite import Store

_COMMAND_ERRORS: tuple[type[Exception], ...] = (MigrationError, OSError, *DATABASE_ERRORS)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
PROG = "compliance-orchestrator"


class AdminError(OrchestratorError):
    """An operator command did nothing (or not all of it); the message says why."""

    def __init__(
        self, message: str, exit_code: int = EXIT_FAILURE, detail: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.detail = dict(detail or {})


Outcome = tuple[dict[str, Any], str]  # (JSON result, human text)


def layout_from_args(args: argparse.Namespace) -> Layout:
    """The folders named by `--config`; ConfigError (exit 2) if the file is unusable."""
    config = load_config(args.config)
    return Layout.from_config(config)


def hook_targets_from_args(args: argparse.Namespace) -> tuple[HookTarget, ...]:
    """The [[hooks]]/[[webhooks]] of `--config`, as the store writes their runs."""
    from orchestrator.daemon.hooks import targets_of  # the daemon's, only when needed

    return targets_of(load_config(args.config))


def config_hint(args: argparse.Namespace) -> str:
    """`--config PATH` as the operator typed it, for commands we suggest."""
    return f"--config {args.config}"


def quiet_logging() -> None:
    # The library modules log (e.g. the rejected-file placement at debug); for a command,
    # stdout is the answer, so only real problems are shown, and on stderr.
    configure_logging("warning", "auto", stream=sys.stderr)


def run_admin(args: argparse.Namespace, work: Callable[[argparse.Namespace], Outcome]) -> int:
    """Run one command; print its answer (human or `--json`); map failures to exit codes."""
    quiet_logging()
    as_json = bool(getattr(args, "json", False))
    try:
        result, text = work(args)
    except AdminError as error:
        return _fail(as_json, error.message, error.exit_code, error.detail)
    except StoreUnavailable as error:  # the server is down or refuses us: not a config error
        return _fail(as_json, error.message, EXIT_FAILURE, {})
    except ConfigError as error:  # bad config, schema too new, state directory locked
        return _fail(as_json, error.message, EXIT_USAGE, {})
    except _COMMAND_ERRORS as error:  # one line: libpq's messages span several
        text = " ".join(f"{type(error).__name__}: {error}".split())
        return _fail(as_json, text, EXIT_FAILURE, {})
    if as_json:
        print(json.dumps({"ok": True, **result}, indent=2, sort_keys=True, default=str))
    else:
        print(text)
    return EXIT_OK


def _fail(as_json: bool, message: str, code: int, detail: Mapping[str, Any]) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    if as_json:
        payload = {"ok": False, "error": message, "exit_code": code, **detail}
        print(json.dumps(payload, indent=2, sort_keys=True, default=str))
    return code


def daemon_note(layout: Layout) -> tuple[int | None, str]:
    """(PID or None of this host's daemon, a clause saying when the daemon will act on what
    we just changed). A shared store (PostgreSQL): the leader acts, on whichever host."""
    pid = daemon_pid(layout.state_dir, lock_file_name(layout.host_id))
    if layout.host_id is not None:
        here = f"PID {pid}" if pid else "none"
        return pid, (f"the cluster's leader picks it up within a few seconds (the daemon on "
                     f"this host, {layout.host_id}: {here}; `status` shows the leader)")
    if pid:
        return pid, f"the running daemon (PID {pid}) picks it up within a few seconds"
    return None, "the daemon is not running: it picks this up when it starts"


def has_state(layout: Layout) -> bool:
    """A store to note history in: the SQLite file exists, or the store is PostgreSQL."""
    return layout.host_id is not None or layout.db_path.exists()


@asynccontextmanager
async def open_store(layout: Layout, *, hook_targets: tuple[HookTarget, ...] = ()
                     ) -> AsyncIterator[Store]:
    """The state database, for a command that changes it while the daemon may run.
    `hook_targets`: a command that rejects inputs writes their `rejected` hook runs too.

    Never migrates (that is `migrate`'s job, with the daemon stopped): a database at another
    schema version than this program's is refused with exit 2.
    """
    if layout.store is not None and layout.store.backend == "postgresql":
        from orchestrator.credentials import load_db_password
        from orchestrator.store.postgresql import PostgresStore

        try:
            pg_store = await PostgresStore.open_pg(
                layout.store.dsn, SystemClock(), password=load_db_password(layout.store),
                host_id=layout.host_id, migrate=False,  # events name the host they came from
            )
        except MigrationError as error:
            raise AdminError(str(error), EXIT_USAGE) from None
        pg_store.hook_targets = hook_targets
        try:
            yield pg_store
        finally:
            await pg_store.close()
        return
    if not layout.db_path.exists():
        raise AdminError(
            f"no state database at {layout.db_path}: the daemon has not run here yet"
        )
    conn = await connect(layout.db_path)
    try:
        pending = await pending_migrations(conn)  # SchemaTooNew is a ConfigError: exit 2
        if pending:
            raise AdminError(
                f"the state database needs migration(s) {', '.join(map(str, pending))}: "
                f"run `{PROG} migrate` first (with the daemon stopped)",
                EXIT_USAGE,
            )
        store = Store(conn, SystemClock())
        store.hook_targets = hook_targets
        yield store
    finally:
        await conn.close()


def short_time(value: datetime | str | None) -> str:
    """`2026-01-02T03:04:05Z` (RFC 3339 UTC, whole seconds, see clock.rfc3339); `-` when
    unknown."""
    return rfc3339(value) or "-"


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"
