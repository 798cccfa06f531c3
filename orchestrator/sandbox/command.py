"""`compliance-orchestrator sandbox`: serve the emulator until SIGINT/SIGTERM.

On start one JSON line goes to stdout, e.g.
  {"event": "sandbox.ready", "base_url": "http://127.0.0.1:8099", "token": "sandbox-token", ...}
so a parent process can read where to connect; request logs (one JSON object per line) go
to stderr or --log-file. Keep the top-level imports light: the CLI imports this module to
build its parser.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from orchestrator.sandbox.config import SandboxConfig
from orchestrator.sandbox.faults import SPEC_HELP, parse_fault_spec

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _fault_arg(value: str) -> dict[str, Any]:
    try:
        return parse_fault_spec(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fraction(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return number


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add every sandbox option (with help) to `parser`."""
    d = SandboxConfig()
    net = parser.add_argument_group("listening")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    net.add_argument(
        "--port",
        type=int,
        default=0,
        help="port to bind; 0 picks a free one, printed on start (default: %(default)s)",
    )
    net.add_argument(
        "--token",
        default=d.token,
        help="the bearer token the API accepts (default: %(default)s)",
    )
    net.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="PATH",
        help="where uploads and results are stored (default: a temporary folder, removed on exit)",
    )

    api = parser.add_argument_group("API behaviour")
    api.add_argument(
        "--concurrency",
        choices=("global", "per-type"),
        default=d.concurrency,
        help="one-job rule: one active job at a time ('global', the API reference's wording) "
        "or one per job type ('per-type', what production did) (default: %(default)s)",
    )
    api.add_argument(
        "--upload-window",
        type=float,
        default=d.upload_window_s,
        metavar="SECONDS",
        help="upload_url validity after creation; unused jobs then turn expired "
        "(default: %(default)s)",
    )
    api.add_argument(
        "--download-window",
        type=float,
        default=d.download_window_s,
        metavar="SECONDS",
        help="download_url validity after creation (default: %(default)s = 7 days)",
    )
    api.add_argument(
        "--processing-time",
        type=float,
        default=d.processing_time_s,
        metavar="SECONDS",
        help="time from upload (in_progress) to complete (default: %(default)s)",
    )
    api.add_argument(
        "--processing-time-per-id",
        type=float,
        default=d.processing_time_per_id_s,
        metavar="SECONDS",
        help="extra processing time per uploaded ID (default: %(default)s)",
    )
    api.add_argument(
        "--rate-limit",
        type=int,
        default=d.rate_limit,
        metavar="N",
        help="requests per window and endpoint (create, get, list) (default: %(default)s)",
    )
    api.add_argument(
        "--rate-window",
        type=float,
        default=d.rate_window_s,
        metavar="SECONDS",
        help="fixed rate-limit window (default: %(default)s)",
    )
    api.add_argument(
        "--no-result-count",
        action="store_true",
        help="omit meta.result_count from list responses (as in 2021 recordings)",
    )
    api.add_argument(
        "--empty-list-meta",
        action="store_true",
        help='answer an empty list with {"meta":{"result_count":0}} (the v2 convention) '
        "instead of {} (what twarc accepts; the real shape was never recorded)",
    )
    api.add_argument(
        "--unknown-job",
        choices=("errors", "404"),
        default=d.unknown_job,
        help="answer for an unknown job id: 200 with errors[] (v2 style) or a 404 problem "
        "(default: %(default)s)",
    )

    res = parser.add_argument_group("results")
    res.add_argument(
        "--seed",
        type=int,
        default=d.seed,
        help="seed of the deterministic choice of non-compliant IDs (default: %(default)s)",
    )
    res.add_argument(
        "--affected-fraction",
        type=_fraction,
        default=d.affected_fraction,
        metavar="F",
        help="share of IDs reported non-compliant (default: %(default)s)",
    )
    res.add_argument(
        "--unknown-reason-fraction",
        type=_fraction,
        default=d.unknown_reason_fraction,
        metavar="F",
        help="share of result rows with an undocumented reason (default: %(default)s)",
    )
    res.add_argument(
        "--unknown-reason",
        default=d.unknown_reason,
        help="the undocumented reason to use (default: %(default)s)",
    )
    res.add_argument(
        "--no-blank-lines",
        action="store_true",
        help="do not put blank lines into result files (real files have them)",
    )
    res.add_argument(
        "--no-shuffle",
        action="store_true",
        help="keep result rows in upload order (real files are unordered)",
    )

    flt = parser.add_argument_group("faults")
    flt.add_argument(
        "--fault",
        action="append",
        type=_fault_arg,
        default=[],
        metavar="SPEC",
        help=f"script a fault, repeatable: {SPEC_HELP}; e.g. upload:500:3, get:429:2:5, "
        "download:truncate:1:1000, create:reset",
    )
    flt.add_argument(
        "--fail-fraction",
        type=_fraction,
        default=d.fail_fraction,
        metavar="F",
        help="deterministic share of jobs that end failed (default: %(default)s)",
    )
    flt.add_argument(
        "--fail-error",
        default=d.fail_error,
        help="the error string of failed jobs (default: %(default)s)",
    )
    flt.add_argument(
        "--fail-next-jobs",
        type=int,
        default=0,
        metavar="N",
        help="the next N jobs created end failed (default: %(default)s)",
    )
    flt.add_argument(
        "--clock-offset",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="start the sandbox clock this far ahead of real time (default: %(default)s)",
    )
    flt.add_argument(
        "--freeze-clock",
        action="store_true",
        help="stop real time from moving the sandbox clock; move it with POST /_sandbox/clock",
    )

    logs = parser.add_argument_group("logging")
    logs.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="log level (default: %(default)s)",
    )
    logs.add_argument(
        "--log-file",
        type=Path,
        default=None,
        metavar="PATH",
        help="append the JSON request log here instead of stderr",
    )


def config_from_args(args: argparse.Namespace) -> SandboxConfig:
    return SandboxConfig(
        token=args.token,
        concurrency=args.concurrency,
        upload_window_s=args.upload_window,
        download_window_s=args.download_window,
        processing_time_s=args.processing_time,
        processing_time_per_id_s=args.processing_time_per_id,
        rate_limit=args.rate_limit,
        rate_window_s=args.rate_window,
        seed=args.seed,
        affected_fraction=args.affected_fraction,
        unknown_reason_fraction=args.unknown_reason_fraction,
        unknown_reason=args.unknown_reason,
        blank_lines=not args.no_blank_lines,
        shuffle=not args.no_shuffle,
        include_result_count=not args.no_result_count,
        empty_list_meta=args.empty_list_meta,
        fail_fraction=args.fail_fraction,
        fail_error=args.fail_error,
        data_dir=args.data_dir,
        unknown_job=args.unknown_job,
    )


def _configure_logging(level: str, stream: TextIO) -> None:
    import logging

    import structlog

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(stream=stream, level=logging.WARNING, format="%(message)s")


async def _serve(args: argparse.Namespace, config: SandboxConfig) -> int:
    import asyncio
    import os
    import signal
    from datetime import UTC, datetime, timedelta

    from orchestrator.sandbox.clock import SandboxClock
    from orchestrator.sandbox.server import Sandbox

    clock = SandboxClock(datetime.now(UTC) + timedelta(seconds=args.clock_offset))
    if args.freeze_clock:
        clock.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    sandbox = Sandbox(config, host=args.host, port=args.port, clock=clock)
    try:
        await sandbox.start()
    except OSError as exc:
        print(f"sandbox: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        for fault in args.fault:
            sandbox.faults.add(**fault)
        if args.fail_next_jobs > 0:
            sandbox.faults.fail_next_jobs(args.fail_next_jobs, args.fail_error)
        ready = {
            "event": "sandbox.ready",
            "base_url": sandbox.base_url,
            "token": sandbox.token,
            "pid": os.getpid(),
            "data_dir": str(sandbox.data_dir),
        }
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
        await stop.wait()
    finally:
        await sandbox.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return EXIT_OK


def run_command(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; exit 0 after a clean stop, 2 on bad options."""
    import asyncio

    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.fail_next_jobs < 0:
        print("sandbox: --fail-next-jobs must be >= 0", file=sys.stderr)
        return EXIT_USAGE
    log_stream: TextIO = sys.stderr
    if args.log_file is not None:
        log_stream = open(args.log_file, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
    try:
        _configure_logging(args.log_level, log_stream)
        return asyncio.run(_serve(args, config))
    finally:
        if log_stream is not sys.stderr:
            log_stream.close()
