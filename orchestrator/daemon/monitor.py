"""The status line systemd shows, and the queue-length gauge, kept up to date.

`status_line` is pure: lanes and queue in, one human line out, e.g.
"tweets batch 12: waiting for job 1446 (poll 3); 4 queued". `Monitor` refreshes it at most
every second (sooner when poked after a transition), reads the queue from the database
at most every few seconds, and sends STATUS= only when the text changed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

import anyio
import structlog

from orchestrator.core.model import Batch, BatchState, InputState
from orchestrator.daemon.activity import Activity, Transfer
from orchestrator.daemon.metrics import Metrics
from orchestrator.daemon.systemd import Notifier
from orchestrator.store.sqlite import Store
from orchestrator.wakeup import Wakeup

log = structlog.get_logger(__name__)

WAITING_INPUTS = (InputState.CLAIMING, InputState.CLAIMED, InputState.QUEUED)
_MIB = 1024 * 1024


def _progress(transfer: Transfer | None) -> str:
    if transfer is None:
        return ""
    done = f"{transfer.done / _MIB:.1f}"
    if transfer.total > 0:
        percent = int(transfer.done * 100 / transfer.total)
        return f" ({percent}%, {done}/{transfer.total / _MIB:.1f} MiB)"
    return f" ({done} MiB)"


def describe_batch(batch: Batch, transfer: Transfer | None = None) -> str:
    """One lane's part of the status line."""
    job = batch.x_job_id
    match batch.state:
        case BatchState.QUEUED if batch.attempt == 0:
            doing = "starting"
        case BatchState.QUEUED:
            doing = f"starting attempt {batch.attempt + 1} with a new job"
        case BatchState.CREATING:
            doing = f"creating job (attempt {batch.attempt})"
        case BatchState.UPLOADING:
            doing = f"uploading {batch.id_count} IDs to job {job}{_progress(transfer)}"
        case BatchState.WAITING:
            doing = f"waiting for job {job} (poll {batch.poll_count})"
        case BatchState.DOWNLOADING:
            doing = f"downloading results of job {job}{_progress(transfer)}"
        case BatchState.DELIVERING:
            doing = f"delivering results of job {job}"
        case _:
            doing = str(batch.state)
    if batch.stage_retries:
        doing += f", retry {batch.stage_retries}"
    return f"{batch.job_type} batch {batch.id}: {doing}"


def queue_text(queue: Mapping[str, int]) -> str:
    """"4 queued (tweets 3, users 1)", or "" when nothing waits."""
    total = sum(queue.values())
    if not total:
        return ""
    parts = [f"{job_type} {n}" for job_type, n in sorted(queue.items()) if n]
    return f"{total} queued ({', '.join(parts)})"


def status_line(
    lanes: Sequence[tuple[Batch | None, Transfer | None]],
    queue: Mapping[str, int],
    *,
    paused: bool = False,
    stopping: bool = False,
) -> str:
    busy = [describe_batch(batch, transfer) for batch, transfer in lanes if batch is not None]
    parts = ["; ".join(busy) if busy else "idle"]
    waiting = queue_text(queue)
    if waiting:
        parts.append(waiting)
    text = "; ".join(parts)
    if paused:
        text = "paused: the X API refused the credentials (fix the token); " + text
    if stopping:
        text = "stopping: " + text
    return text


async def queue_counts(store: Store) -> dict[str, int]:
    """Input files per job type that wait for a batch (counted by the database)."""
    return await store.count_inputs_by_type(WAITING_INPUTS)


async def oldest_waiting(store: Store) -> datetime | None:
    """When the longest-waiting input file not yet in a batch was claimed."""
    times = [i.claimed_at for i in await store.inputs_in(WAITING_INPUTS) if i.claimed_at]
    return min(times, default=None)


class Monitor:
    def __init__(
        self,
        store: Store,
        activity: Activity,
        metrics: Metrics,
        notifier: Notifier,
        *,
        paused: Callable[[], bool] = lambda: False,
        tick_s: float = 1.0,
        queue_refresh_s: float = 5.0,
        debounce_s: float = 0.2,
    ) -> None:
        self.store = store
        self.activity = activity
        self.metrics = metrics
        self.notifier = notifier
        self.paused = paused
        self.tick_s = tick_s
        self.queue_refresh_s = queue_refresh_s
        self.debounce_s = debounce_s
        self.queue: dict[str, int] = {}
        self.stopping = False
        self._poke = Wakeup()
        self._queue_read_at: float | None = None

    def poke(self) -> None:
        """Something changed (a transition, a new input): refresh soon."""
        self._poke.notify()

    def text(self) -> str:
        lanes = [(lane.batch, lane.transfer) for lane in self.activity.lanes]
        return status_line(lanes, self.queue, paused=self.paused(), stopping=self.stopping)

    def publish(self) -> str:
        text = self.text()
        if self.notifier.status(text):
            log.debug("service.status", status=text)
        return text

    async def refresh_queue(self) -> None:
        try:
            self.queue = await queue_counts(self.store)
            oldest = await oldest_waiting(self.store)
        except Exception as error:  # the status line must never take the daemon down
            log.warning("service.status_failed", error=type(error).__name__, error_msg=str(error))
            return
        finally:
            self._queue_read_at = self.activity.monotonic()
        self.metrics.set_queue(self.queue, oldest)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        await self.refresh_queue()
        task_status.started()
        while True:
            self.publish()
            poked = await self._poke.wait(self.tick_s)
            stale = (
                self._queue_read_at is None
                or self.activity.monotonic() - self._queue_read_at >= self.queue_refresh_s
            )
            if poked:
                await anyio.sleep(self.debounce_s)  # a burst of transitions: one refresh
            if poked or stale:
                await self.refresh_queue()

