"""One daemon per state directory, checked against a real second process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.daemon.lock import AlreadyRunning, StateLock
from orchestrator.errors import ConfigError

HOLDER = """
import sys
from pathlib import Path
from orchestrator.daemon.lock import StateLock

with StateLock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.readline()  # hold the lock until the test closes our stdin
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A separate process holding the lock on tmp_path/state."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "state")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "locked\n"  # bounded by the test timeout
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()


def test_second_process_is_refused_with_the_holders_pid(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    state = tmp_path / "state"
    with pytest.raises(AlreadyRunning) as info:
        StateLock(state).acquire()
    message = str(info.value)
    assert f"PID {holder.pid}" in message
    assert str(state) in message
    assert isinstance(info.value, ConfigError)  # `run` exits 2

    assert holder.stdin is not None
    holder.stdin.close()  # the holder exits normally and releases the lock
    assert holder.wait(timeout=30) == 0
    with StateLock(state) as lock:
        assert lock.held
        assert (state / "daemon.lock").read_text() == f"{os.getpid()}\n"


def test_lock_is_released_when_the_holder_is_killed(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    with StateLock(tmp_path / "state") as lock:  # no stale lock after kill -9
        assert lock.held


def test_creates_the_state_dir_and_clears_the_pid_on_release(tmp_path: Path) -> None:
    state = tmp_path / "a" / "b"
    lock = StateLock(state)
    with lock:
        assert (state / "daemon.lock").read_text() == f"{os.getpid()}\n"
    assert not lock.held
    assert (state / "daemon.lock").read_text() == ""  # the file stays; only the lock goes
    with StateLock(state):  # and can be taken again
        pass


def test_second_lock_in_the_same_process_is_refused(tmp_path: Path) -> None:
    with StateLock(tmp_path), pytest.raises(AlreadyRunning, match=f"PID {os.getpid()}"):
        StateLock(tmp_path).acquire()


def test_unusable_state_dir_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match=r"cannot use state directory .*file/state"):
        StateLock(blocker / "state").acquire()
