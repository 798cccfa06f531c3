"""Prometheus metrics of one daemon, in a registry of its own (never the global one).

Counters and the histogram are fed by small calls from the runner, the X API client and the
transfer progress meter; values that are cheaper to read than to keep up to date (rate-limit
budgets, deadlines of the jobs in hand, heartbeat age) are read when /metrics is scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from orchestrator.core.model import BatchState, JobType
from orchestrator.core.ratelimit import RateLimit

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
    seconds_left: float


@dataclass(frozen=True, slots=True)
class LiveSources:
    """Read at scrape time."""

    rate_limits: Callable[[], Mapping[str, RateLimit]]
    deadlines: Callable[[], Iterable[Deadline]]
    heartbeat_age_s: Callable[[], float]


class _LiveCollector:
    def __init__(self, sources: LiveSources) -> None:
        self._sources = sources

    def collect(self) -> Iterable[Metric]:
        remaining = GaugeMetricFamily(
            "orchestrator_rate_limit_remaining",
            "Requests left in the current 15-minute window, as the X API last reported.",
            labels=["endpoint"],
        )
        for endpoint, limit in sorted(self._sources.rate_limits().items()):
            remaining.add_metric([endpoint], limit.remaining)
        yield remaining
        deadline = GaugeMetricFamily(
            "orchestrator_job_deadline_seconds",
            "Seconds until the current job's upload window closes (while uploading) or its "
            "results expire (afterwards); negative when passed.",
            labels=["job_type", "deadline"],
        )
        for item in self._sources.deadlines():
            deadline.add_metric([item.job_type, item.kind], item.seconds_left)
        yield deadline
        yield GaugeMetricFamily(
            "orchestrator_heartbeat_age_seconds",
            "Seconds since the least recently active runner lane last made progress.",
            value=self._sources.heartbeat_age_s(),
        )


class Metrics:
    def __init__(self) -> None:
        registry = self.registry = CollectorRegistry()
        self.queue_length = Gauge(
            "orchestrator_queue_length",
            "Input files claimed or queued and not yet in a batch, by job type.",
            ["job_type"],
            registry=registry,
        )
        self.jobs_finished = Counter(
            "orchestrator_jobs_finished",
            "Batches (one remote compliance job's worth of input) that reached an end, by "
            "outcome: done (results delivered) or failed (inputs rejected).",
            ["job_type", "outcome"],
            registry=registry,
        )
        self.api_requests = Counter(
            "orchestrator_api_requests",
            "X API requests by endpoint and HTTP status (status 'error': no answer).",
            ["endpoint", "status"],
            registry=registry,
        )
        self.transfer_bytes = Counter(
            "orchestrator_transfer_bytes",
            "Bytes sent to (upload) and received from (download) the signed storage URLs.",
            ["direction"],
            registry=registry,
        )
        self.stage_duration = Histogram(
            "orchestrator_stage_duration_seconds",
            "Time a batch spent in a stage (creating, uploading, waiting, downloading, "
            "delivering), observed when it leaves the stage.",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        # Series that exist from the start read 0 instead of being absent.
        for job_type in JobType:
            self.queue_length.labels(str(job_type)).set(0)
            for outcome in OUTCOMES:
                self.jobs_finished.labels(str(job_type), str(outcome))
        for direction in DIRECTIONS:
            self.transfer_bytes.labels(direction)
        self._live: _LiveCollector | None = None

    # ---- feeding --------------------------------------------------------------------------

    def api_request(self, endpoint: str, status: int | None) -> None:
        self.api_requests.labels(endpoint, "error" if status is None else str(status)).inc()

    def transferred(self, direction: str, count: int) -> None:
        if count > 0:
            self.transfer_bytes.labels(direction).inc(count)

    def job_finished(self, job_type: str, outcome: str) -> None:
        self.jobs_finished.labels(job_type, outcome).inc()

    def stage_finished(self, stage: str, seconds: float) -> None:
        self.stage_duration.labels(stage).observe(max(0.0, seconds))

    def set_queue(self, counts: Mapping[str, int]) -> None:
        for job_type in JobType:
            self.queue_length.labels(str(job_type)).set(counts.get(str(job_type), 0))

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
