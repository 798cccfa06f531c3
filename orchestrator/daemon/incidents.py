"""Incidents: runs of consecutive failures, for `/healthz` and for the line that ends them.

The runner reports every step's outcome here. Two kinds of incident are tracked:

- per batch and stage: the first success after failures logs one `<stage>.recovered` line
  saying how long the incident lasted, how many failures it had and what the last one was;
- per condition, for /healthz: `x_unreachable` (connection errors, timeouts and 5xx from the
  X API or its storage; 429 and 409 are answers, not outages) and `outbox_unwritable` /
  `spool_unwritable` (OSError while delivering / while working in the spool). A condition
  ends with the first success of the same kind of work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog

from orchestrator.core import machine
from orchestrator.core.model import Batch
from orchestrator.errors import ConflictError, IntegrityError, RateLimited, RetryableError
from orchestrator.redact import redact_text

log = structlog.get_logger(__name__)

X_UNREACHABLE = "x_unreachable"
OUTBOX_UNWRITABLE = "outbox_unwritable"
SPOOL_UNWRITABLE = "spool_unwritable"
CONDITIONS = (X_UNREACHABLE, OUTBOX_UNWRITABLE, SPOOL_UNWRITABLE)

_K = TypeVar("_K")
_REMOTE_STEPS = (machine.CreateJob, machine.Upload, machine.Poll, machine.Download)


@dataclass(slots=True)
class Incident:
    since: float  # monotonic time of the first failure
    failures: int
    last_error: str
    last_error_msg: str

    def record(self, error: BaseException) -> None:
        self.failures += 1
        self.last_error, self.last_error_msg = describe(error)


def describe(error: BaseException) -> tuple[str, str]:
    """(exception class, redacted message) for log lines and /healthz."""
    return type(error).__name__, redact_text(str(error))[:500]


def is_outage(error: BaseException) -> bool:
    """The other side did not answer usefully: no connection, a timeout, or a 5xx."""
    if not isinstance(error, RetryableError) or isinstance(
        error, RateLimited | ConflictError | IntegrityError
    ):
        return False
    status = error.http_status
    return status is None or status >= 500


class Incidents:
    def __init__(self, monotonic: Callable[[], float]) -> None:
        self.monotonic = monotonic
        self._steps: dict[tuple[int, str], Incident] = {}
        self._conditions: dict[str, Incident] = {}

    # ---- what the runner reports --------------------------------------------------------

    def step_failed(self, batch: Batch, step: machine.Step, error: BaseException) -> None:
        self._open(self._steps, (batch.id, str(batch.state)), error)
        condition = _condition_of(step, error)
        if condition is not None:
            self._open(self._conditions, condition, error)

    def step_succeeded(self, batch: Batch, step: machine.Step) -> None:
        stage = str(batch.state)
        incident = self._steps.pop((batch.id, stage), None)
        if incident is not None:
            log.info(
                f"{stage}.recovered", stage=stage, failures=incident.failures,
                incident_s=round(self.monotonic() - incident.since, 1),
                last_error=incident.last_error, last_error_msg=incident.last_error_msg,
            )
        for condition in _conditions_cleared_by(step):
            self._conditions.pop(condition, None)

    def local_failed(self, error: BaseException) -> None:
        """Spool trouble outside a step (building a pack body)."""
        self._open(self._conditions, SPOOL_UNWRITABLE, error)

    def forget_batch(self, batch_id: int) -> None:
        for key in [k for k in self._steps if k[0] == batch_id]:
            del self._steps[key]

    # ---- what /healthz reads --------------------------------------------------------------

    def conditions(self) -> dict[str, Incident]:
        return dict(self._conditions)

    def age_s(self, incident: Incident) -> float:
        return max(0.0, self.monotonic() - incident.since)

    def _open(self, table: dict[_K, Incident], key: _K, error: BaseException) -> None:
        incident = table.get(key)
        if incident is None:
            name, message = describe(error)
            table[key] = Incident(self.monotonic(), 1, name, message)
        else:
            incident.record(error)


def _condition_of(step: machine.Step, error: BaseException) -> str | None:
    if isinstance(step, _REMOTE_STEPS) and is_outage(error):
        return X_UNREACHABLE
    if isinstance(error, OSError):
        return OUTBOX_UNWRITABLE if isinstance(step, machine.Deliver) else SPOOL_UNWRITABLE
    return None


def _conditions_cleared_by(step: machine.Step) -> tuple[str, ...]:
    if isinstance(step, machine.Deliver):
        return (OUTBOX_UNWRITABLE, SPOOL_UNWRITABLE)  # delivery reads and writes both
    if isinstance(step, machine.Download):
        return (X_UNREACHABLE, SPOOL_UNWRITABLE)  # the download lands in the spool
    if isinstance(step, _REMOTE_STEPS):
        return (X_UNREACHABLE,)
    return ()
