"""Command line: parse arguments and hand over to the module that does the work.

Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from orchestrator import __version__
from orchestrator.errors import ExitCode

# command -> "module:function"; imported lazily so `--help` stays fast and light.
HANDLERS: dict[str, str] = {
    "run": "orchestrator.daemon.command:run_command",
    "sandbox": "orchestrator.sandbox.command:run_command",
    "demo": "orchestrator.cli.demo:run_command",
    "status": "orchestrator.cli.status:status_command",
    "check-config": "orchestrator.cli.check_config:check_config_command",
    "jobs": "orchestrator.cli.jobs:jobs_command",
    "requeue": "orchestrator.cli.requeue:requeue_command",
    "retry": "orchestrator.cli.retry:retry_command",
    "retry-hooks": "orchestrator.cli.retry_hooks:retry_hooks_command",
    "cancel": "orchestrator.cli.cancel:cancel_command",
    "migrate": "orchestrator.cli.migrate:migrate_command",
    "backup": "orchestrator.cli.backup:backup_command",
    "withdraw": "orchestrator.cli.withdraw:withdraw_command",
    "pause": "orchestrator.cli.pause:pause_command",
    "resume": "orchestrator.cli.pause:resume_command",
    "submit": "orchestrator.cli.submit:submit_command",
}


def _add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", type=Path, required=True, metavar="PATH", help="the TOML config file"
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def rfc3339_time(text: str) -> Any:
    from orchestrator.cli.requeue_all import since_arg

    return since_arg(text)


def _add_json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true",
        help="print one JSON object (with \"ok\"; errors too) instead of text, for scripts",
    )


def _add_admin_commands(commands: Any) -> None:
    """The operator commands. They work while the daemon runs, except `migrate`."""
    jobs = commands.add_parser(
        "jobs", help="history of batches with outcomes, durations and counts",
        description="History of batches (one remote job's worth of work each), newest first: "
        "outcome (done, failed, cancelled, in progress), duration, inputs, IDs, affected IDs, "
        "attempts and remote job ids. Read-only; works while the daemon runs.",
    )
    _add_config_arg(jobs)
    jobs.add_argument(
        "--limit", type=_positive_int, default=20, metavar="N", help="show N batches (20)"
    )
    _add_json_arg(jobs)

    requeue = commands.add_parser(
        "requeue", help="put a rejected file (or --all of them) back into the inbox",
        description="Move FILE from outbox/rejected/ back into inbox/<type>/ (atomically, "
        "under a name that does not clash) and remove its .error.json; the daemon then "
        "claims it like any new file. The type comes from the error record, or --type.",
    )
    _add_config_arg(requeue)
    requeue.add_argument("file", metavar="FILE", nargs="?", default=None,
                         help="a name in outbox/rejected/ or a path to it")
    requeue.add_argument("--all", action="store_true",
                         help="every rejected file with an error record (see --reason, --since)")
    requeue.add_argument("--reason", default=None, metavar="CODE",
                         help="with --all: only files rejected with this reason code")
    requeue.add_argument("--since", type=rfc3339_time, default=None, metavar="TIME",
                         help="with --all: only files rejected at or after this RFC 3339 time")
    requeue.add_argument(
        "--type", choices=("tweets", "users"), default=None,
        help="job type, when the error record does not say (or to override it)",
    )
    _add_json_arg(requeue)

    retry = commands.add_parser(
        "retry", help="try a waiting batch now, or requeue a failed batch's inputs",
        description="A batch waiting for its next attempt (backing off after errors, or paused "
        "after an authentication error): clear the wait so the daemon tries it within seconds. "
        "A failed batch: put its inputs from outbox/rejected/ back into the inbox. Anything "
        "else: say why nothing was done (exit 1).",
    )
    _add_config_arg(retry)
    retry.add_argument("batch", type=int, metavar="BATCH", help="batch id (see `jobs`)")
    _add_json_arg(retry)

    retry_hooks = commands.add_parser(
        "retry-hooks", help="run failed hook and webhook runs again",
        description="Failed hook and webhook runs (see `status`) go back to pending with "
        "their attempts reset and the same idempotency key; the daemon runs them within "
        "seconds. Exit 1 if there is no failed run (or RUN is not one).",
    )
    _add_config_arg(retry_hooks)
    retry_hooks.add_argument("run", type=int, nargs="?", metavar="RUN",
                             help="one run id (default: every failed run)")
    _add_json_arg(retry_hooks)

    cancel = commands.add_parser(
        "cancel", help="cancel a queued batch; its inputs go to outbox/rejected/",
        description="Cancel a queued batch: its inputs go to outbox/rejected/ with an "
        ".error.json with reason 'cancelled' (`requeue` brings them back). A batch "
        "with a remote job needs --force: X has no cancel endpoint, so that job keeps running "
        "until it completes or expires, and its results are not downloaded. A delivering "
        "batch cannot be cancelled.",
    )
    _add_config_arg(cancel)
    cancel.add_argument("batch", type=int, metavar="BATCH", help="batch id (see `jobs`)")
    cancel.add_argument(
        "--force", action="store_true",
        help="cancel even though a remote job exists (it is left running, unwatched)",
    )
    _add_json_arg(cancel)

    withdraw = commands.add_parser(
        "withdraw", help="take a queued file (not yet in a job) out of the queue",
        description="Move a queued input that no batch carries yet to outbox/rejected/ with "
        "reason 'withdrawn' (`requeue` brings it back). NAME is the file's name as dropped "
        "(see `status --files`). A file already in a batch is refused: `cancel BATCH`.",
    )
    _add_config_arg(withdraw)
    withdraw.add_argument("name", metavar="NAME", help="the queued file's name")
    withdraw.add_argument("--type", choices=("tweets", "users"), default=None,
                          help="its job type, when files of both types have this name")
    _add_json_arg(withdraw)

    pause = commands.add_parser(
        "pause", help="hold new remote jobs for maintenance (survives a restart)",
        description="Stop the daemon starting new remote jobs (no batch is formed or sent to "
        "X) until `resume`; jobs in flight finish, and new inbox files are still claimed. "
        "Stored in the state database, so it survives a restart; a running daemon notices "
        "within seconds. `status` shows it. Pausing when paused keeps the first pause.",
    )
    _add_config_arg(pause)
    pause.add_argument("--reason", default=None, metavar="TEXT",
                       help="why (shown by `status`)")
    _add_json_arg(pause)

    resume = commands.add_parser(
        "resume", help="lift a `pause`: queued files go on",
        description="Lift a maintenance pause: the daemon starts remote jobs again within "
        "seconds (or when it starts). Nothing to do when not paused (exit 0).",
    )
    _add_config_arg(resume)
    _add_json_arg(resume)

    submit = commands.add_parser(
        "submit", help="copy a file into the inbox safely (optionally as a named dataset)",
        description="Copy FILE into the inbox folder of its type under a temp dotfile name, "
        "fsync it, then give it its final name (never replacing a waiting file). With "
        "--dataset NAME the file is named NAME@<UTC time><suffix>: each delivery of the "
        "dataset is then compared with its previous one. The inbox must exist and be writable.",
    )
    _add_config_arg(submit)
    submit.add_argument("file", type=Path, metavar="FILE", help="the file to submit")
    submit.add_argument("--type", required=True, choices=("tweets", "users"),
                        help="the job type: which inbox folder it goes to")
    submit.add_argument("--dataset", default=None, metavar="NAME",
                        help="a dataset name (letters, digits, . _ -; at most 64)")
    _add_json_arg(submit)

    migrate = commands.add_parser(
        "migrate", help="apply pending database migrations (daemon stopped)",
        description="Apply pending schema migrations to the state database, after a backup "
        "copy in <state_dir>/backups/, and report them. Refused (exit 2) while the daemon "
        "runs, or when the database is newer than this program.",
    )
    _add_config_arg(migrate)
    _add_json_arg(migrate)

    backup = commands.add_parser(
        "backup", help="copy the state database to DIR (works while the daemon runs)",
        description="Write a consistent copy of the state database to DIR/state-<UTC time>.db "
        "(mode 0600: it holds signed URLs) with SQLite's online backup API, and print its "
        "path. Safe while the daemon runs. Restore: see INSTALL.md.",
    )
    _add_config_arg(backup)
    backup.add_argument("--to", type=Path, required=True, metavar="DIR",
                        help="folder for the copy (created 0700 if missing)")
    _add_json_arg(backup)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="compliance-orchestrator",
        description="Runs X API v2 batch compliance jobs from an inbox folder to an outbox.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser("run", help="run the daemon in the foreground")
    _add_config_arg(run)

    sandbox = commands.add_parser(
        "sandbox",
        help="serve the offline emulator of the X compliance API and its storage",
        description="Serve the offline emulator of the X compliance API and its signed-URL "
        "storage on a loopback port, for tests, demos and trying things with curl.",
    )
    from orchestrator.sandbox.command import configure_parser

    configure_parser(sandbox)

    demo = commands.add_parser(
        "demo", help="zero-setup run: sandbox + daemon + sample files, then a summary"
    )
    demo.add_argument(
        "--workdir", type=Path, default=None,
        help="folder for inbox/outbox/state (default: a new temporary folder, kept)",
    )
    demo.add_argument(
        "--timeout", type=float, default=120.0, help="give up after this many seconds"
    )

    status = commands.add_parser("status", help="queue, current job, deadlines, recent outcomes")
    _add_config_arg(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--files", action="store_true",
        help="also list the queued input files not yet in a job (names `withdraw` takes)",
    )

    check = commands.add_parser(
        "check-config",
        help="validate the config file, its folders and that a bearer token is available"
    )
    _add_config_arg(check)
    check.add_argument(
        "--online", action="store_true",
        help="also make one authenticated call to X: reachable (else exit 1), token accepted "
        "(else exit 2)",
    )
    _add_admin_commands(commands)
    return parser


def _resolve(spec: str) -> Callable[[argparse.Namespace], int]:
    module_name, _, function_name = spec.partition(":")
    handler: Callable[[argparse.Namespace], int] = getattr(
        importlib.import_module(module_name), function_name
    )
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = _resolve(HANDLERS[args.command])
    try:
        return handler(args)
    except KeyboardInterrupt:
        return ExitCode.FAILURE


if __name__ == "__main__":
    sys.exit(main())
