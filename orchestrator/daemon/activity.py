"""What the runner is doing right now, for the status line, /healthz, /metrics and the watchdog.

Each lane has a heartbeat that advances every loop iteration, with every chunk a transfer
moves and with every block of file work in a worker thread (`pulse`), so a lane busy with a
long upload or with splitting a huge result file still counts as alive while a stuck one
does not.
The batch in hand, its stage timing and the transfer progress live here too, which keeps the
runner's own code about jobs rather than about observing them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from orchestrator.clock import Clock
from orchestrator.core.model import Batch, BatchState
from orchestrator.daemon.incidents import Incidents
from orchestrator.daemon.metrics import Deadline, Metrics

log = structlog.get_logger(__name__)

# Progress lines of a transfer: one each time another 10 % is done, at most one every 5 s,
# and at least one a minute while a slow (or unknown-size) transfer keeps moving.
PROGRESS_STEP_PERCENT = 10
PROGRESS_MIN_GAP_S = 5.0
PROGRESS_MAX_QUIET_S = 60.0


@dataclass(slots=True)
class Transfer:
    direction: str  # "upload" | "download"
    done: int
    total: int  # -1 when unknown


@dataclass(slots=True)
class Lane:
    beat: float
    batch: Batch | None = None
    transfer: Transfer | None = None


def _no_pulse() -> None:
    return None


class Activity:
    def __init__(
        self,
        lanes: int,
        metrics: Metrics,
        *,
        clock: Clock,
        on_change: Callable[[], None] = lambda: None,
        download_warn_lead_s: float = 86400.0,
    ) -> None:
        self.metrics = metrics
        self.download_warn_lead_s = download_warn_lead_s
        self.monotonic = clock.monotonic
        self.now = clock.now
        self.on_change = on_change
        start = clock.monotonic()
        self.lanes = [Lane(beat=start) for _ in range(lanes)]
        self.incidents = Incidents(clock.monotonic)  # failure runs: /healthz, *.recovered
        self._stages: dict[int, tuple[BatchState, float, bool]] = {}  # id -> state, since, seen
        self._deadline_warned: set[tuple[int, str | None]] = set()  # (batch id, x_job_id)

    # ---- liveness ---------------------------------------------------------------------------

    def beat(self, lane: int) -> None:
        self.lanes[lane].beat = self.monotonic()

    def pulse(self, lane: int | None) -> Callable[[], None]:
        """A `progress()` callback for file work done in a worker thread for `lane`: each
        call beats the lane's heart. Safe from any thread: it only stores one float."""
        if lane is None:
            return _no_pulse
        slot = self.lanes[lane]
        monotonic = self.monotonic

        def beat() -> None:
            slot.beat = monotonic()

        return beat

    @property
    def heartbeat(self) -> float:
        """The oldest lane heartbeat: one stuck lane is enough to call the runner stuck."""
        return min(lane.beat for lane in self.lanes)

    def heartbeat_age_s(self) -> float:
        return max(0.0, self.monotonic() - self.heartbeat)

    # ---- the batch in hand ------------------------------------------------------------------

    def hold(self, lane: int, batch: Batch | None) -> None:
        """`lane` now works on `batch` (None: idle)."""
        slot = self.lanes[lane]
        before = slot.batch
        slot.batch = batch if batch is None or not batch.state.is_final else None
        slot.transfer = None
        if batch is not None:
            self._stage(batch)
        if before != slot.batch:
            self.on_change()

    def update(self, batch: Batch) -> None:
        """A new persisted version of a batch (after every transition)."""
        self._stage(batch)
        for slot in self.lanes:
            if slot.batch is not None and slot.batch.id == batch.id:
                slot.batch = None if batch.state.is_final else batch
                slot.transfer = None
        self.on_change()

    def _stage(self, batch: Batch) -> None:
        now = self.monotonic()
        known = self._stages.get(batch.id)
        if known is not None and known[0] is batch.state:
            return
        if known is not None:
            state, since, seen_entry = known
            # A stage entered before this process started has no honest duration.
            if seen_entry:
                self.metrics.stage_finished(str(state), now - since)
        if batch.state.is_final:
            self.incidents.forget_batch(batch.id)
            self._stages.pop(batch.id, None)
            self._deadline_warned = {k for k in self._deadline_warned if k[0] != batch.id}
        else:
            self._stages[batch.id] = (batch.state, now, known is not None)

    def current(self) -> dict[int, Batch]:
        return {i: lane.batch for i, lane in enumerate(self.lanes) if lane.batch is not None}

    def lane_of(self, batch: Batch) -> int | None:
        for index, slot in enumerate(self.lanes):
            if slot.batch is not None and slot.batch.id == batch.id:
                return index
        return None

    def deadlines(self) -> list[Deadline]:
        """Upload window while uploading, results expiry once a job holds the upload."""
        out: list[Deadline] = []
        for slot in self.lanes:
            batch = slot.batch
            if batch is None or batch.x_job_id is None:
                continue
            if batch.state is BatchState.UPLOADING:
                kind, at = "upload", batch.upload_expires_at
            else:
                kind, at = "download", batch.download_expires_at
            if at is not None:
                out.append(Deadline(str(batch.job_type), kind, at))
        return out

    def warn_if_results_expire_soon(self, batch: Batch) -> None:
        """Once per remote job (and process): its results expire within download_warn_lead_s
        and are not downloaded yet."""
        expires = batch.download_expires_at
        if batch.state not in (BatchState.WAITING, BatchState.DOWNLOADING) or expires is None:
            return
        left = (expires - self.now()).total_seconds()
        key = (batch.id, batch.x_job_id)
        if left >= self.download_warn_lead_s or key in self._deadline_warned:
            return
        self._deadline_warned.add(key)
        log.warning(
            "job.download_deadline_near", x_job_id=batch.x_job_id, state=str(batch.state),
            download_expires_at=expires.isoformat(), remaining_s=round(left),
            warn_lead_s=self.download_warn_lead_s,
        )

    # ---- transfers --------------------------------------------------------------------------

    def meter(
        self, batch: Batch, direction: str, *, baseline: int | None, resumed_bytes_count: bool
    ) -> TransferMeter:
        """A progress callback for one transfer call of `batch`.

        `baseline`: bytes already in place before the call (None: the first callback says).
        `resumed_bytes_count`: a callback going backwards means the transfer restarted from
        byte 0 and re-sent everything (download), rather than the server holding fewer bytes
        than were sent (resumable upload).
        """
        return TransferMeter(self, self.lane_of(batch), batch, direction, baseline,
                             resumed_bytes_count)


class TransferMeter:
    """The `progress(done, total)` callback of an upload or download: byte counters, heartbeat,
    status and bounded-frequency progress lines with bytes, percent and rate."""

    def __init__(
        self,
        activity: Activity,
        lane: int | None,
        batch: Batch,
        direction: str,
        baseline: int | None,
        restart_counts: bool,
    ) -> None:
        self.activity = activity
        self.lane = lane
        self.direction = direction
        self.x_job_id = batch.x_job_id
        self._last = baseline
        self._restart_counts = restart_counts
        self._moved = 0  # bytes that crossed the wire in this call
        self._started = activity.monotonic()
        self._line_at = self._started
        self._line_step = -1

    def __call__(self, done: int, total: int) -> None:
        activity = self.activity
        if self._last is None:
            self._last = done
        elif done >= self._last:
            self._count(done - self._last)
        elif self._restart_counts:
            self._count(done)
        self._last = done
        if self.lane is not None:
            activity.beat(self.lane)
            slot = activity.lanes[self.lane]
            if slot.transfer is None:
                slot.transfer = Transfer(self.direction, done, total)
                activity.on_change()
            else:
                slot.transfer.done, slot.transfer.total = done, total
        self._maybe_log(done, total)

    def _count(self, count: int) -> None:
        self._moved += count
        self.activity.metrics.transferred(self.direction, count)

    def _maybe_log(self, done: int, total: int) -> None:
        if total > 0 and done >= total:
            return  # the completion line says it
        now = self.activity.monotonic()
        since = now - self._line_at
        percent = done * 100 / total if total > 0 else None
        step = math.floor(percent / PROGRESS_STEP_PERCENT) if percent is not None else -1
        due = since >= PROGRESS_MAX_QUIET_S or (
            step > max(self._line_step, 0) and since >= PROGRESS_MIN_GAP_S
        )
        if not due:
            return
        self._line_at, self._line_step = now, step
        elapsed = now - self._started
        log.info(
            f"{self.direction}.progress",
            x_job_id=self.x_job_id,
            bytes=done,
            total_bytes=total if total >= 0 else None,
            percent=round(percent, 1) if percent is not None else None,
            rate_bytes_s=int(self._moved / elapsed) if elapsed > 0 else None,
            elapsed_s=round(elapsed, 1),
        )
