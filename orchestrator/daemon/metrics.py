"""Prometheus metrics of one daemon, in a registry of its own (never the global one).

Counters and the histogram are fed by small calls from the runner, the X API client and the
transfer progress meter; values that are cheaper to read than to keep up to date (rate-limit
budgets, deadlines of the jobs in hand, heartbeat age, auth pause) are read when /metrics is
scraped. Every name starts with `compliance_orchestrator_` and passes `promtool check metrics`.
"""

from __future__ import annotations

import math
import time
from collections import Counter as Counter_
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from orchestrator import __version__
from orchestrator.core.model import Batch, BatchState, InputState, JobType
from orchestrator.core.ratelimit import RateLimit
from orchestrator.remote.storage import REQUEST_OBSERVER
from orchestrator.store.rows import BatchPart

# `*_created` series read as extra gauge families to promtool and most dashboards.
disable_created_metrics()  # type: ignore[no-untyped-call]

PREFIX = "compliance_orchestrator_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
API_ENDPOINTS = ("create", "get", "list")
OUTCOMES = (BatchState.DONE, BatchState.FAILED)
DIRECTIONS = ("upload", "download")
# Stages last from milliseconds (delivering a small file) to days (a slow remote job).
STAGE_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 7 * 24 * 3600)


@dataclass(frozen=True, slots=True)
class Deadline:
    """The next deadline of a batch in hand: its upload window, or its download window."""

    job_type: str
    kind: str  # "upload" | "download"
    at: datetime


@dataclass(frozen=True, slots=True)
class LiveSources:
    """Read at scrape time."""

    rate_limits: Callable[[], Mapping[str, RateLimit]]
    deadlines: Callable[[], Iterable[Deadline]]
    heartbeat_age_s: Callable[[], float]
    auth_paused: Callable[[], bool] = lambda: False
    in_hand: Callable[[], Iterable[Batch]] = lambda: ()
    leader: Callable[[], bool] = lambda: True
    lease_age_s: Callable[[], float | None] = lambda: None
    standbys: Callable[[], int] | None = None  # only with a shared store (several hosts)


class _LiveCollector:
    def __init__(self, sources: LiveSources) -> None:
        self._sources = sources

    def collect(self) -> Iterable[Metric]:
        remaining = GaugeMetricFamily(
            PREFIX + "rate_limit_remaining",
            "Requests left in the current 15-minute window, as the X API last reported.",
            labels=["endpoint"],
        )
        limits = GaugeMetricFamily(
            PREFIX + "rate_limit_limit",
            "Requests allowed per 15-minute window, as the X API last reported.",
            labels=["endpoint"],
        )
        for endpoint, limit in sorted(self._sources.rate_limits().items()):
            remaining.add_metric([endpoint], limit.remaining)
            limits.add_metric([endpoint], limit.limit)
        yield remaining
        yield limits
        deadline = GaugeMetricFamily(
            PREFIX + "job_deadline_timestamp_seconds",
            "Unix time at which the current job's upload window closes (while uploading) or "
            "its results expire (afterwards).",
            labels=["job_type", "deadline"],
        )
        for item in self._sources.deadlines():
            deadline.add_metric([item.job_type, item.kind], item.at.timestamp())
        yield deadline
        stages = GaugeMetricFamily(
            PREFIX + "batches_in_hand",
            "Batches the runner lanes are working on now, by job type and stage.",
            labels=["job_type", "stage"],
        )
        counts = Counter_((str(b.job_type), str(b.state)) for b in self._sources.in_hand())
        for (job_type, stage), count in sorted(counts.items()):
            stages.add_metric([job_type, stage], count)
        yield stages
        yield GaugeMetricFamily(
            PREFIX + "heartbeat_age_seconds",
            "Seconds since the least recently active runner lane last made progress.",
            value=self._sources.heartbeat_age_s(),
        )
        yield GaugeMetricFamily(
            PREFIX + "auth_paused",
            "1 while the X API refuses the token and work is paused until it is fixed, else 0.",
            value=1.0 if self._sources.auth_paused() else 0.0,
        )
        yield GaugeMetricFamily(
            PREFIX + "leader",
            "1 while this host holds the leader lease and drives X, 0 while it stands by.",
            value=1.0 if self._sources.leader() else 0.0,
        )
        age = self._sources.lease_age_s()
        yield GaugeMetricFamily(
            PREFIX + "lease_age_seconds",
            "Seconds since the leader last renewed its lease, as this host last read it "
            "(NaN while no host holds it).",
            value=math.nan if age is None else age,
        )
        if self._sources.standbys is not None:
            yield GaugeMetricFamily(
                PREFIX + "standbys",
                "Other hosts standing by to take over, with a heartbeat within the lease TTL.",
                value=float(self._sources.standbys()),
            )


class Metrics:
    def __init__(self) -> None:
        registry = self.registry = CollectorRegistry()
        build = Gauge(PREFIX + "build_info", "Always 1; the version of the running daemon.",
                      ["version"], registry=registry)
        build.labels(__version__).set(1)
        self.queue_length = Gauge(
            PREFIX + "queue_length",
            "Input files claimed or queued and not yet in a batch, by job type.",
            ["job_type"],
            registry=registry,
        )
        self.oldest_queued = Gauge(
            PREFIX + "oldest_queued_input_age_seconds",
            "Age of the oldest input file claimed or queued and not yet in a batch (0: none).",
            registry=registry,
        )
        self._oldest_queued_at: float | None = None
        self.oldest_queued.set_function(self._oldest_age)
        self.last_delivery = Gauge(
            PREFIX + "last_delivery_timestamp_seconds",
            "Unix time of the last batch whose results were delivered (0: none since start).",
            registry=registry,
        )
        self.batches_finished = Counter(
            PREFIX + "batches_finished",
            "Batches (one remote compliance job's worth of input) that reached an end, by "
            "outcome: done (results delivered) or failed (inputs rejected).",
            ["job_type", "outcome"],
            registry=registry,
        )
        self.inputs_finished = Counter(
            PREFIX + "inputs_finished",
            "Input files that reached an end, by outcome (delivered, rejected) and reason "
            "(none when delivered; the .error.json reason code when rejected, at intake or "
            "when their batch ended). job_type none: an entry outside a type folder.",
            ["job_type", "outcome", "reason"],
            registry=registry,
        )
        self.retries = Counter(
            PREFIX + "retries",
            "Failed steps that will be tried again, by stage and error class.",
            ["stage", "error_class"],
            registry=registry,
        )
        self.api_requests = Counter(
            PREFIX + "api_requests",
            "X API requests by endpoint and HTTP status (status 'error': no answer).",
            ["endpoint", "status"],
            registry=registry,
        )
        self.storage_requests = Counter(
            PREFIX + "storage_requests",
            "HTTP requests to the signed storage URLs by operation (upload, download) and "
            "HTTP status ('error': no answer); a resumable upload is many requests.",
            ["operation", "status"],
            registry=registry,
        )
        self.transfer_bytes = Counter(
            PREFIX + "transfer_bytes",
            "Bytes sent to (upload) and received from (download) the signed storage URLs.",
            ["direction"],
            registry=registry,
        )
        self.stage_duration = Histogram(
            PREFIX + "stage_duration_seconds",
            "Time a batch spent in a stage (creating, uploading, waiting, downloading, "
            "delivering), observed when it leaves the stage.",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.hook_runs = Counter(
            PREFIX + "hook_runs",
            "Attempts of hook and webhook runs by kind (hook, webhook), event (on) and outcome "
            "(done; retry: failed, tried again later; failed: given up, see retry-hooks).",
            ["kind", "on", "outcome"],
            registry=registry,
        )
        self.hook_runs_pending = Gauge(
            PREFIX + "hook_runs_pending",
            "Hook and webhook runs not yet done or failed (waiting, retrying or running).",
            registry=registry,
        )
        # Series that exist from the start read 0 instead of being absent.
        for job_type in JobType:
            self.queue_length.labels(str(job_type)).set(0)
            for outcome in OUTCOMES:
                self.batches_finished.labels(str(job_type), str(outcome))
        for direction in DIRECTIONS:
            self.transfer_bytes.labels(direction)
        self._live: _LiveCollector | None = None

    def _oldest_age(self) -> float:
        at = self._oldest_queued_at
        return 0.0 if at is None else max(0.0, time.time() - at)

    # ---- feeding --------------------------------------------------------------------------

    def hook_run(self, kind: str, on: str, outcome: str) -> None:
        self.hook_runs.labels(kind, on, outcome).inc()

    def api_request(self, endpoint: str, status: int | None) -> None:
        self.api_requests.labels(endpoint, "error" if status is None else str(status)).inc()

    @contextmanager
    def storage_request(self, operation: str) -> Iterator[None]:
        """Count every HTTP request to storage made inside (a resumable upload is a POST and
        many chunk PUTs) by operation and HTTP status, or 'error' when no answer came."""

        def counted(endpoint: str, status: int | None) -> None:
            label = "error" if status is None else str(status)
            self.storage_requests.labels(endpoint or operation, label).inc()

        token = REQUEST_OBSERVER.set(counted)
        try:
            yield
        finally:
            REQUEST_OBSERVER.reset(token)

    def transferred(self, direction: str, count: int) -> None:
        if count > 0:
            self.transfer_bytes.labels(direction).inc(count)

    def batch_finished(self, batch: Batch, parts: Iterable[BatchPart], at: datetime) -> None:
        """A batch ended; `parts` as read before the end (inputs of other open batches are
        still BATCHED and are counted when their last batch ends)."""
        job_type, failed = str(batch.job_type), batch.state is BatchState.FAILED
        self.batches_finished.labels(job_type, str(batch.state)).inc()
        inputs = {part.input.id: part.input.state for part in parts}
        for state in inputs.values():
            if failed:
                self.inputs_finished.labels(job_type, "rejected", "gave_up").inc()
            elif state is InputState.DELIVERED:
                self.inputs_finished.labels(job_type, "delivered", "none").inc()
            elif state is InputState.REJECTED:  # delivery found it changed after the claim
                self.inputs_finished.labels(job_type, "rejected", "changed_after_claim").inc()
        if not failed:
            self.last_delivery.set(at.timestamp())

    def input_rejected(self, job_type: str, reason: str) -> None:
        """An input (or inbox entry) rejected at intake, before any batch."""
        self.inputs_finished.labels(job_type, "rejected", reason).inc()

    def retry(self, stage: str, error_class: str) -> None:
        self.retries.labels(stage, error_class).inc()

    def stage_finished(self, stage: str, seconds: float) -> None:
        self.stage_duration.labels(stage).observe(max(0.0, seconds))

    def set_queue(self, counts: Mapping[str, int], oldest: datetime | None = None) -> None:
        for job_type in JobType:
            self.queue_length.labels(str(job_type)).set(counts.get(str(job_type), 0))
        self._oldest_queued_at = None if oldest is None else oldest.timestamp()

    def watch(self, sources: LiveSources) -> None:
        """Read these sources at every scrape (replaces earlier ones)."""
        if self._live is not None:
            self.registry.unregister(self._live)
        self._live = _LiveCollector(sources)
        self.registry.register(self._live)

    # ---- reading --------------------------------------------------------------------------

    def render(self) -> bytes:
        """The Prometheus text exposition format."""
        return generate_latest(self.registry)
