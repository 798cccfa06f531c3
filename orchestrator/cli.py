"""Command line: parse arguments and hand over to the module that does the work.

Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from orchestrator import __version__

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

# command -> "module:function"; imported lazily so `--help` stays fast and light.
HANDLERS: dict[str, str] = {
    "run": "orchestrator.service:run_command",
    "sandbox": "orchestrator.sandbox.command:run_command",
    "demo": "orchestrator.demo:run_command",
    "status": "orchestrator.status:status_command",
    "check-config": "orchestrator.config:check_config_command",
}


def _add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", type=Path, required=True, metavar="PATH", help="the TOML config file"
    )


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

    check = commands.add_parser(
        "check-config", help="validate the config file and that a bearer token is available"
    )
    _add_config_arg(check)
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
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
