"""sd_notify without libsystemd: one datagram per message to $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket

import structlog

log = structlog.get_logger(__name__)


def _address(raw: str) -> str | bytes:
    # A leading "@" means an abstract socket: the name starts with a NUL byte.
    return b"\0" + raw[1:].encode() if raw.startswith("@") else raw


def notify(message: str, environ: dict[str, str] | None = None) -> bool:
    """Send e.g. "READY=1" or "STATUS=idle"; returns False when not under systemd."""
    raw = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET")
    if not raw:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(_address(raw))
            sock.sendall(message.encode())
    except OSError as error:
        log.warning("systemd.notify_failed", error=type(error).__name__, error_msg=str(error))
        return False
    return True


def watchdog_interval_s(environ: dict[str, str] | None = None) -> float | None:
    """Half of WatchdogSec, when systemd asked for pings (and they are meant for us)."""
    env = environ if environ is not None else os.environ
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None
