"""One daemon per state directory: an exclusive flock on `<state_dir>/daemon.lock`.

With a shared store (several hosts, issue 12) the lock is per host, `daemon.<host_id>.lock`:
two daemons with one host_id on one machine still refuse, and hosts never rely on flock
across machines (on NFS it is unreliable): what keeps hosts apart is the lease in the store.

flock is released by the kernel when the process dies, however it dies, so there is no stale
lock to clean up after kill -9. The file is never deleted (deleting a lock file races with a
process that has just opened it); it only records the holder's PID for the error message.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from orchestrator.errors import ConfigError

LOCK_FILE_NAME = "daemon.lock"
# The holder writes its PID just after taking the lock; wait this long to read it.
_PID_READ_TRIES = 20
_PID_READ_PAUSE_S = 0.01


def lock_file_name(host_id: str | None = None) -> str:
    """`daemon.lock` (one host: SQLite), or the per-host `daemon.<host_id>.lock`."""
    return LOCK_FILE_NAME if host_id is None else f"daemon.{host_id}.lock"


class AlreadyRunning(ConfigError):
    """Another process holds the state directory."""


class StateLock:
    """`with StateLock(state_dir):` or `acquire()` / `release()`. Not reentrant: a second
    StateLock on the same directory fails even in the same process."""

    def __init__(self, state_dir: Path, name: str = LOCK_FILE_NAME) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / name
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            raise RuntimeError("StateLock.acquire() called twice")
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConfigError(
                f"cannot use state directory {self.state_dir}: {exc.strerror}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            pid = f"PID {holder}" if holder else "PID not recorded yet"
            raise AlreadyRunning(
                f"state directory {self.state_dir} is in use by another process ({pid}, "
                f"lock {self.path}); stop it first or use another paths.state_dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            # Clear the PID while still holding the lock: after unlocking, the file is the
            # next holder's to write.
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the last descriptor releases the flock

    def __enter__(self) -> StateLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    for _ in range(_PID_READ_TRIES):
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit():
            return int(text)
        time.sleep(_PID_READ_PAUSE_S)
    return None
