"""systemd notify protocol: READY/STATUS/WATCHDOG/STOPPING over a real NOTIFY_SOCKET, the
status line a human reads in `systemctl status`, and watchdog pings tied to the heartbeat."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
from clocks import FakeClock
from daemon_helpers import TOKEN, drop, make_ids, outcome, wait_for, write_config

from orchestrator.core.model import Batch, BatchState, JobType
from orchestrator.daemon import systemd
from orchestrator.daemon.activity import Activity, Transfer
from orchestrator.daemon.metrics import Metrics
from orchestrator.daemon.monitor import status_line
from orchestrator.sandbox import Sandbox


class NotifySocket:
    """The systemd side: an AF_UNIX datagram socket collecting notify messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.lines: list[str] = []  # every KEY=VALUE line, in arrival order

    def poll(self) -> list[str]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.lines
            self.lines.extend(data.decode().splitlines())

    def keys(self) -> list[str]:
        return [line.partition("=")[0] for line in self.poll()]

    def statuses(self) -> list[str]:
        return [line[len("STATUS="):] for line in self.poll() if line.startswith("STATUS=")]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    # sun_path holds 107 bytes; pytest's tmp_path can be longer than that.
    folder = tmp_path if len(str(tmp_path)) < 80 else Path(tempfile.mkdtemp(prefix="co-"))
    listener = NotifySocket(folder / "notify.sock")
    yield listener
    listener.close()


# ---- notify(), Notifier, watchdog_interval_s --------------------------------------------


def test_notify_sends_one_datagram_and_is_a_no_op_outside_systemd(
    notify_socket: NotifySocket,
) -> None:
    assert systemd.notify("READY=1\nSTATUS=idle", {"NOTIFY_SOCKET": str(notify_socket.path)})
    assert notify_socket.poll() == ["READY=1", "STATUS=idle"]
    assert systemd.notify("READY=1", {}) is False


def test_status_is_sent_only_when_it_changes() -> None:
    sent: list[str] = []
    notifier = systemd.Notifier(lambda message: sent.append(message) or True)
    notifier.ready("idle")
    assert notifier.status("idle") is False
    assert notifier.status("tweets batch 1: creating job (attempt 1)") is True
    assert notifier.status("tweets batch 1: creating job (attempt 1)") is False
    notifier.extend_timeout(2.5)
    assert sent == [
        "READY=1\nSTATUS=idle",
        "STATUS=tweets batch 1: creating job (attempt 1)",
        "EXTEND_TIMEOUT_USEC=2500000",
    ]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}, 0.1),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(
    env: dict[str, str], expected: float | None
) -> None:
    assert systemd.watchdog_interval_s(env) == expected


# ---- the watchdog follows the heartbeat ---------------------------------------------------


def _activity(clock: FakeClock, lanes: int = 1) -> Activity:
    return Activity(lanes, Metrics(), clock=clock)


def test_watchdog_stops_pinging_when_the_heartbeat_stalls_and_says_so_once() -> None:
    clock = FakeClock()
    activity = _activity(clock)
    pings: list[str] = []
    watchdog = systemd.Watchdog(
        systemd.Notifier(lambda m: pings.append(m) or True), interval_s=0.1, stale_s=30,
        heartbeat=lambda: activity.heartbeat, clock=clock,
    )
    with structlog.testing.capture_logs() as logs:
        for _ in range(5):  # the lane loops: every tick sees a fresh heartbeat
            activity.beat(0)
            clock.advance(10)
            assert watchdog.tick()
        assert pings == ["WATCHDOG=1"] * 5
        clock.advance(25)  # 35 s without a beat: stuck
        assert not watchdog.tick()
        clock.advance(100)
        assert not watchdog.tick()
        assert len(pings) == 5
        activity.beat(0)
        assert watchdog.tick()
    assert [e["event"] for e in logs] == ["watchdog.stalled", "watchdog.recovered"]
    assert len(pings) == 6


def test_a_lane_in_a_long_transfer_stays_alive_through_progress_callbacks() -> None:
    clock = FakeClock()
    activity = _activity(clock, lanes=2)
    batch = Batch(id=7, key="k", job_type=JobType.TWEETS, state=BatchState.UPLOADING,
                  x_job_id="1446", id_count=10)
    activity.hold(0, batch)
    meter = activity.meter(batch, "upload", baseline=0, resumed_bytes_count=False)
    for step in range(1, 11):
        clock.advance(20)
        activity.beat(1)  # the other lane idles along
        meter(step * 1024 * 1024, 10 * 1024 * 1024)
        assert activity.heartbeat_age_s() == 0
    clock.advance(200)  # no chunk for 200 s: the transfer, and so the runner, is stuck
    activity.beat(1)
    assert activity.heartbeat_age_s() == 200


# ---- the status line -----------------------------------------------------------------------


def test_status_line_names_the_batch_the_stage_the_job_and_the_queue() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    waiting = Batch(id=12, key="k", job_type=JobType.TWEETS, state=BatchState.WAITING,
                    x_job_id="1446227761489620999", poll_count=3,
                    download_expires_at=now + timedelta(days=7))
    assert status_line([(None, None)], {}) == "idle"
    assert status_line([(waiting, None)], {"tweets": 3, "users": 1}) == (
        "tweets batch 12: waiting for job 1446227761489620999 (poll 3); "
        "4 queued (tweets 3, users 1)"
    )
    uploading = Batch(id=3, key="k", job_type=JobType.USERS, state=BatchState.UPLOADING,
                      x_job_id="99", id_count=5000, stage_retries=2)
    text = status_line([(uploading, Transfer("upload", 3 << 20, 12 << 20))], {}, stopping=True)
    assert text == ("stopping: users batch 3: uploading 5000 IDs to job 99 "
                    "(25%, 3.0/12.0 MiB), retry 2")
    assert status_line([(None, None)], {"users": 2}, paused=True).startswith("paused:")


# ---- the real thing: a `run` subprocess under a fake systemd -------------------------------


def _spawn(config_path: Path, notify: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "X_BEARER_TOKEN": TOKEN, "NOTIFY_SOCKET": str(notify),
           "WATCHDOG_USEC": "200000"}
    env.pop("JOURNAL_STREAM", None)
    # WATCHDOG_PID must be the daemon's own pid: exec keeps the shell's pid.
    command = (f'WATCHDOG_PID=$$ exec "{sys.executable}" -m orchestrator run '
               f'--config "{config_path}"')
    with open(config_path.parent / "daemon.log", "ab") as log_file:
        return subprocess.Popen(["/bin/sh", "-c", command], env=env, stdout=log_file,
                                stderr=subprocess.STDOUT)


async def test_run_reports_ready_status_watchdog_and_stopping_in_order(
    tmp_path: Path, sandbox: Sandbox, notify_socket: NotifySocket
) -> None:
    sandbox.config.processing_time_s = 1.0  # long enough to be seen waiting
    config_path = write_config(tmp_path, sandbox.base_url)
    process = _spawn(config_path, notify_socket.path)
    try:
        await wait_for(lambda: "READY=1" in notify_socket.poll(), timeout=30, what="READY=1")
        drop(tmp_path, "tweets", "ids.txt", make_ids(1, 50))
        # Read as we go, like systemd: a full socket buffer would drop messages.
        await wait_for(lambda: bool(notify_socket.poll())
                       and outcome(tmp_path, "tweets", "ids.txt") == "delivered",
                       what="delivery")
        await wait_for(lambda: notify_socket.statuses()[-1] == "idle", what="idle again")
        process.send_signal(signal.SIGTERM)
        await wait_for(lambda: process.poll() is not None, timeout=30, what="exit")
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, (tmp_path / "daemon.log").read_text()[-3000:]

    keys = notify_socket.keys()
    ready, stopping = keys.index("READY"), keys.index("STOPPING")
    assert "EXTEND_TIMEOUT_USEC" in keys[:ready]  # migrations and recovery announced
    assert "EXTEND_TIMEOUT_USEC" in keys[stopping:]  # and the stop phase
    assert ready < keys.index("WATCHDOG") < stopping
    assert keys.count("WATCHDOG") >= 3
    assert keys.count("READY") == 1
    statuses = notify_socket.statuses()
    assert statuses[0] == "idle"  # sent with READY=1
    during = statuses[1:statuses.index(next(s for s in statuses if s.startswith("stopping")))]
    assert any(s.startswith("tweets batch 1: waiting for job ") for s in during), statuses
    assert all(a != b for a, b in itertools.pairwise(statuses))  # only changes
    assert statuses[-1].startswith("stopping")


async def test_a_standby_pings_the_watchdog_while_its_lease_loop_runs(
    tmp_path: Path, sandbox: Sandbox, notify_socket: NotifySocket
) -> None:
    from orchestrator.clock import SystemClock
    from orchestrator.store.sqlite import Store

    config_path = write_config(tmp_path, sandbox.base_url)
    config_path.write_text(config_path.read_text()
                           + '\n[service]\nhost_id = "node-b"\n\n[store]\nlease_ttl_s = 6.0\n')
    (tmp_path / "state").mkdir()
    other = await Store.open(tmp_path / "state" / "state.db", SystemClock(), host_id="node-a")
    try:
        assert await other.acquire_lease("node-a", 3600.0) == 1  # node-a leads throughout
        before = len(sandbox.request_log)
        process = _spawn(config_path, notify_socket.path)
        try:
            await wait_for(lambda: "READY=1" in notify_socket.poll(), timeout=30, what="READY")
            await wait_for(lambda: bool(notify_socket.poll())
                           and notify_socket.keys().count("WATCHDOG") >= 5,
                           timeout=30, what="watchdog pings from the standby")
            process.send_signal(signal.SIGTERM)
            await wait_for(lambda: process.poll() is not None, timeout=30, what="exit")
        finally:
            if process.poll() is None:
                process.kill()
        assert process.returncode == 0, (tmp_path / "daemon.log").read_text()[-3000:]
        view = await other.cluster_view()
        assert view.holder == "node-a"
        assert {h.host_id: h.role for h in view.hosts} == {"node-b": "stopped"}
        assert len(sandbox.request_log) == before  # a standby sent nothing to X
    finally:
        await other.close()
