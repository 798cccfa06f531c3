"""Everything the sandbox's request handlers share, reachable from `request.app[STATE]`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from orchestrator.sandbox.clock import SandboxClock
from orchestrator.sandbox.config import SandboxConfig
from orchestrator.sandbox.faults import Faults
from orchestrator.sandbox.jobs import JobStore
from orchestrator.sandbox.ratelimit import RateLimiter
from orchestrator.sandbox.record import RequestRecord
from orchestrator.sandbox.signing import Signer
from orchestrator.sandbox.truth import Truth, truth_for

if TYPE_CHECKING:
    from orchestrator.sandbox.sessions import Session


@dataclass(slots=True)
class SandboxState:
    config: SandboxConfig
    clock: SandboxClock
    signer: Signer
    store: JobStore
    limiter: RateLimiter
    faults: Faults
    data_dir: Path
    request_log: list[RequestRecord] = field(default_factory=list)
    arrivals: int = 0  # requests received so far (RequestRecord.arrived)
    sessions: dict[str, Session] = field(default_factory=dict)

    def truth(self, job_type: str) -> Truth:
        cfg = self.config
        return truth_for(
            job_type,
            cfg.seed,
            cfg.affected_fraction,
            cfg.unknown_reason_fraction,
            cfg.unknown_reason,
            cfg.repeated_fraction,
        )


STATE: web.AppKey[SandboxState] = web.AppKey("sandbox_state", SandboxState)
