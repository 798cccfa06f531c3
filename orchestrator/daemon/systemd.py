"""sd_notify without libsystemd: one datagram per message to $NOTIFY_SOCKET.

`Notifier` adds what the daemon needs on top of `notify()`: STATUS lines sent only when
they change, EXTEND_TIMEOUT_USEC for slow start-up and shutdown phases, and the reload
handshake. `Watchdog` pings WATCHDOG=1 only while the runner's heartbeat is fresh: a timer
alone would prove that the event loop runs, not that the work moves.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping

import anyio
import structlog

from orchestrator.clock import Clock, kernel_monotonic_usec

log = structlog.get_logger(__name__)


def _address(raw: str) -> str | bytes:
    # A leading "@" means an abstract socket: the name starts with a NUL byte.
    return b"\0" + raw[1:].encode() if raw.startswith("@") else raw


def notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send e.g. "READY=1" or "STATUS=idle"; returns False when not under systemd."""
    raw = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET")
    if not raw:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # Never block the event loop on a receiver that does not keep up: a dropped
            # STATUS or WATCHDOG is repaired by the next one.
            sock.setblocking(False)
            sock.connect(_address(raw))
            sock.sendall(message.encode())
    except BlockingIOError:
        log.debug("systemd.notify_dropped", message=message.partition("=")[0])
        return False
    except OSError as error:
        log.warning("systemd.notify_failed", error=type(error).__name__, error_msg=str(error))
        return False
    return True


def watchdog_interval_s(environ: Mapping[str, str] | None = None) -> float | None:
    """Half of WatchdogSec, when systemd asked for pings (and they are meant for us)."""
    env = environ if environ is not None else os.environ
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2_000_000 if value > 0 else None


class Notifier:
    """The daemon's side of the notify protocol. Safe to use when not under systemd."""

    def __init__(self, send: Callable[[str], bool] = notify) -> None:
        self._send = send
        self._status: str | None = None

    def ready(self, status: str) -> None:
        self._status = status
        self._send(f"READY=1\nSTATUS={status}")

    def status(self, text: str) -> bool:
        """Send STATUS=text unless it is what systemd already shows; True when sent."""
        text = text.replace("\n", " ")
        if text == self._status:
            return False
        self._status = text
        self._send(f"STATUS={text}")
        return True

    def extend_timeout(self, seconds: float) -> None:
        """Give the current start-up or stop phase `seconds` more before systemd's timeout
        (systemd only ever lengthens its timeout with this, never shortens it)."""
        self._send(f"EXTEND_TIMEOUT_USEC={max(1, int(seconds * 1_000_000))}")

    def stopping(self, status: str) -> None:
        self._status = status
        self._send(f"STOPPING=1\nSTATUS={status}")

    def reloading(self) -> None:
        # MONOTONIC_USEC lets systemd tell this reload from an earlier one (Type=notify-reload).
        usec = kernel_monotonic_usec()
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def reloaded(self) -> None:
        self._send("READY=1")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")


class Watchdog:
    """WATCHDOG=1 every `interval_s`, but only while `heartbeat()` is younger than `stale_s`.

    `heartbeat` and `now` read the same monotonic clock (injectable for tests). When the
    heartbeat goes stale the pings stop, and systemd restarts the service after WatchdogSec.
    """

    def __init__(
        self,
        notifier: Notifier,
        *,
        interval_s: float,
        stale_s: float,
        heartbeat: Callable[[], float],
        clock: Clock,
    ) -> None:
        self.notifier = notifier
        self.interval_s = interval_s
        self.stale_s = stale_s
        self.heartbeat = heartbeat
        self.clock = clock
        self.stalled = False

    def tick(self) -> bool:
        """Ping if the runner is alive; True when a ping was sent."""
        age = self.clock.monotonic() - self.heartbeat()
        if age <= self.stale_s:
            if self.stalled:
                log.warning("watchdog.recovered", heartbeat_age_s=round(age, 1))
            self.stalled = False
            self.notifier.watchdog()
            return True
        if not self.stalled:
            # Said once: systemd will restart us after WatchdogSec without pings.
            log.error("watchdog.stalled", heartbeat_age_s=round(age, 1), stale_after_s=self.stale_s)
        self.stalled = True
        return False

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        while True:
            self.tick()
            await anyio.sleep(self.interval_s)
