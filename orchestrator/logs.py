"""Logging: one JSON object per line on stdout (console rendering on a TTY), secrets scrubbed.

Our own events go through structlog directly; stdlib loggers (aiohttp, aiosqlite, watchfiles,
asyncio) are bridged with ProcessorFormatter onto the same stream with the same redaction.
Under systemd each line carries a `<N>` syslog priority prefix, which journald strips and
stores as PRIORITY, so `journalctl -p warning` works while `journalctl -o cat` stays JSON.

State (stream, level, known secrets) lives in module globals read at log time, so that
`configure_logging` can be called again (tests) and `set_level`/`add_secret` take effect for
loggers that were created or bound earlier.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, Processor, WrappedLogger

from orchestrator.redact import REDACTED, SECRET_KEY_PATTERN, redact_text

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
FORMATS = ("json", "console", "auto")
QUIET_LIBRARIES = ("aiosqlite", "watchfiles")  # chatty at debug/info; warnings still shown

# structlog method name -> numeric level (for the level filter and the journald prefix).
_METHOD_LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "msg": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "err": logging.ERROR,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}
_MAX_DEPTH = 8  # deeper structures are rendered as text (and still scrubbed)


class _State:
    stream: TextIO = sys.stdout
    threshold: int = logging.INFO
    secrets: tuple[str, ...] = ()
    journald: bool = False
    lock = threading.Lock()  # one line at a time, from structlog and stdlib alike
    handler: logging.Handler | None = None


_state = _State()
_processors: list[Processor] = []  # mutated in place: bound loggers keep this very list


def _write_line(line: str) -> None:
    with _state.lock:
        try:
            _state.stream.write(line + "\n")
            _state.stream.flush()
        except (OSError, ValueError):
            # A closed or broken stdout (journald restarting, a test's closed capture) must
            # not turn every log call into a crash of the daemon.
            pass


class _LineLogger:
    """structlog's final logger: writes each rendered line to the current stream."""

    def msg(self, message: str) -> None:
        _write_line(message)

    log = debug = info = warn = warning = err = error = exception = critical = fatal = msg


def _logger_factory(*_args: Any) -> _LineLogger:
    return _LineLogger()


class _LineHandler(logging.Handler):
    """stdlib handler writing formatted records with the same lock and stream."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _write_line(self.format(record))
        except Exception:
            self.handleError(record)


def _filter_level(_logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    if _METHOD_LEVELS.get(method, logging.INFO) < _state.threshold:
        raise structlog.DropEvent
    return event_dict


def _scrub(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact_text(value, _state.secrets)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth >= _MAX_DEPTH:
        return redact_text(str(value), _state.secrets)
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            masked = isinstance(key, str) and SECRET_KEY_PATTERN.search(key)
            name = _scrub(key, depth + 1) if isinstance(key, str) else str(key)
            if masked and not (item is None or isinstance(item, bool | int | float)):
                out[name] = REDACTED
            else:
                out[name] = _scrub(item, depth + 1)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(item, depth + 1) for item in value]
    # Anything else (Path, URL, exception, ...) becomes text here, so that no renderer
    # fallback can later repr() an object holding a secret after redaction has run.
    return redact_text(str(value), _state.secrets)


def redact_event(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Mask values of secret-looking keys; scrub URLs, bearer tokens and known secrets from
    every string, nested too. Runs after exceptions are rendered, so tracebacks are covered."""
    scrubbed: EventDict = _scrub(event_dict)
    return scrubbed


def _priority_prefix(level: Any) -> str:
    number = _METHOD_LEVELS.get(str(level).lower(), logging.INFO)
    if number >= logging.ERROR:
        return "<3>"
    if number >= logging.WARNING:
        return "<4>"
    return "<6>" if number >= logging.INFO else "<7>"


class _Render:
    """The renderer, plus the journald priority prefix when stdout is the journal."""

    def __init__(self, renderer: Processor) -> None:
        self._renderer = renderer

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> str:
        level = event_dict.get("level", method)
        line = str(self._renderer(logger, method, event_dict))
        return _priority_prefix(level) + line if _state.journald else line


_LEAD_KEYS = ("timestamp", "level", "event")


def _lead_keys(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """timestamp, level, event first: easier to read in `journalctl -o cat`."""
    lead = {key: event_dict[key] for key in _LEAD_KEYS if key in event_dict}
    return {**lead, **event_dict}


def _stdout_is_journal(stream: TextIO) -> bool:
    """systemd sets JOURNAL_STREAM=<dev>:<inode> of the journal socket it gave us as stdout.
    A child that inherited the variable but writes elsewhere must not add prefixes."""
    expected = os.environ.get("JOURNAL_STREAM")
    if not expected:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, io.UnsupportedOperation):
        return True  # no file descriptor to compare (an in-memory stream): trust the variable
    return f"{st.st_dev}:{st.st_ino}" == expected


def _chains(console: bool, colors: bool) -> tuple[list[Processor], list[Processor]]:
    """(shared pre-chain, tail: exception rendering -> redaction -> renderer)."""
    pre: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor
    if console:
        exceptions: Processor = structlog.processors.format_exc_info
        renderer = structlog.dev.ConsoleRenderer(colors=colors)
    else:
        exceptions = structlog.processors.ExceptionRenderer(
            # No locals: they are bulky and the likeliest place for a secret to hide.
            ExceptionDictTransformer(show_locals=False, use_rich=False)
        )
        renderer = structlog.processors.JSONRenderer()
    tail: list[Processor] = [
        structlog.processors.StackInfoRenderer(),
        exceptions,
        redact_event,
    ]
    if not console:
        tail.append(_lead_keys)
    tail.append(_Render(renderer))
    return pre, tail


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    *,
    stream: TextIO | None = None,
    secrets: Iterable[str] = (),
) -> None:
    """Set up structlog and the stdlib bridge. Safe to call again; replaces the previous set-up
    (the known secrets included)."""
    if level not in LEVELS:
        raise ValueError(f"log level {level!r}: expected one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: expected one of {', '.join(FORMATS)}")
    out = stream if stream is not None else sys.stdout
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    _state.stream = out
    _state.journald = _stdout_is_journal(out)
    _state.secrets = ()
    for secret in secrets:
        add_secret(secret)

    pre, tail = _chains(console, colors=out.isatty())
    _processors[:] = [_filter_level, *pre, *tail]
    structlog.configure(
        processors=_processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=_logger_factory,
        context_class=dict,
        # Not cached: loggers follow later reconfiguration and structlog.testing.capture_logs.
        cache_logger_on_first_use=False,
    )

    root = logging.getLogger()
    if _state.handler is not None:
        root.removeHandler(_state.handler)
    handler = _LineHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*pre, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
        )
    )
    root.addHandler(handler)
    _state.handler = handler
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    set_level(level)


def set_level(level: str) -> None:
    """Change the level of every logger at once (SIGHUP reload)."""
    if level not in LEVELS:
        raise ValueError(f"log level {level!r}: expected one of {', '.join(LEVELS)}")
    _state.threshold = LEVELS[level]
    logging.getLogger().setLevel(LEVELS[level])
    if _state.handler is not None:
        _state.handler.setLevel(LEVELS[level])


def add_secret(value: str) -> None:
    """Register a secret seen after start-up; it is replaced by <redacted> in every line."""
    value = value.strip()
    if value and value not in _state.secrets:
        # Longest first, so that a secret containing another is replaced whole.
        _state.secrets = tuple(sorted({*_state.secrets, value}, key=len, reverse=True))


def reset_logging() -> None:
    """Undo configure_logging (for tests): structlog defaults, our stdlib handler removed."""
    if _state.handler is not None:
        logging.getLogger().removeHandler(_state.handler)
        _state.handler = None
    structlog.reset_defaults()
    _state.stream = sys.stdout
    _state.threshold = logging.INFO
    _state.secrets = ()
    _state.journald = False


MAX_NAMED_FILES = 20  # file names / input ids per log line; `inputs` gives the full count


def file_fields(
    names: Sequence[str], input_ids: Sequence[int], cap: int = MAX_NAMED_FILES
) -> dict[str, Any]:
    """`files`, `input_ids` (at most `cap` of each) and `inputs` (how many there are), so a
    file's story can be followed through every line of its batch."""
    return {"files": list(names[:cap]), "input_ids": list(input_ids[:cap]),
            "inputs": max(len(names), len(input_ids))}


class WarnOnce:
    """A warning per problem, not per retry: repeats of the same failure under the same key
    go to debug, and the first success after a warning is said at info."""

    def __init__(self) -> None:
        self._warned: dict[tuple[str, str], str] = {}  # (kind, key) -> last failure logged

    def warn(self, logger: Any, key: tuple[str, str], event: str, error: BaseException,
             **fields: Any) -> None:
        message = redact_text(str(error))
        # Same kind of failure = same problem, even if the message names another temp file.
        kind = f"{type(error).__name__}:{getattr(error, 'errno', None) or message}"
        level = "debug" if self._warned.get(key) == kind else "warning"
        self._warned[key] = kind
        getattr(logger, level)(event, error=type(error).__name__, error_msg=message, **fields)

    def resolved(self, logger: Any, key: tuple[str, str], event: str, **fields: Any) -> None:
        if self._warned.pop(key, None) is not None:
            logger.info(event, **fields)
