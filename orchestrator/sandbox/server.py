"""`Sandbox`: the emulator as an async context manager (in-process use by tests and demo)."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog
from aiohttp import web

from orchestrator.sandbox.app import build_app
from orchestrator.sandbox.clock import SandboxClock
from orchestrator.sandbox.config import SandboxConfig
from orchestrator.sandbox.control import job_record
from orchestrator.sandbox.faults import Faults
from orchestrator.sandbox.jobs import JobStore
from orchestrator.sandbox.ratelimit import RateLimiter
from orchestrator.sandbox.record import RequestRecord
from orchestrator.sandbox.signing import Signer
from orchestrator.sandbox.state import SandboxState

log = structlog.get_logger(__name__)


def _advertised_host(host: str) -> str:
    if host in ("0.0.0.0", ""):  # noqa: S104 - mapping a wildcard bind to loopback
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class Sandbox:
    """The offline X compliance API + signed-URL storage on one loopback port.

    `async with Sandbox(cfg) as sb:` starts it on `host`:`port` (0 = a free port);
    `sb.base_url` is both the API base and the storage host the signed URLs point to.
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: SandboxClock | None = None,
    ) -> None:
        self.config = config if config is not None else SandboxConfig()
        self.host = host
        self.port = port
        self.clock = clock if clock is not None else SandboxClock()
        self._own_data_dir = self.config.data_dir is None
        self._data_dir: Path | None = None
        self._runner: web.AppRunner | None = None
        self._state: SandboxState | None = None
        self.base_url = ""
        self.faults = Faults(clock=self.clock)  # outages run on the sandbox clock

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("sandbox already started")
        if self.config.data_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix="compliance-sandbox-"))
        else:
            self._data_dir = Path(self.config.data_dir)
            self._data_dir.mkdir(parents=True, exist_ok=True)
        signer = Signer(self.config.signing_key or secrets.token_bytes(32))
        store = JobStore(self.config, self.clock, signer, self._data_dir)
        self.faults.attach(store.fail_next_jobs)
        self._state = SandboxState(
            config=self.config,
            clock=self.clock,
            signer=signer,
            store=store,
            limiter=RateLimiter(self.config, self.clock),
            faults=self.faults,
            data_dir=self._data_dir,
        )
        runner = web.AppRunner(
            build_app(self._state),
            handle_signals=False,
            access_log=None,
            shutdown_timeout=1.0,
            handler_cancellation=True,  # a client that gives up ends its slow/streaming request
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_port = runner.addresses[0][1]
        self.port = bound_port
        self.base_url = f"http://{_advertised_host(self.host)}:{bound_port}"
        store.base_url = self.base_url
        log.info("sandbox.started", base_url=self.base_url, concurrency=self.config.concurrency)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
            log.info("sandbox.stopped", base_url=self.base_url)
        if self._own_data_dir and self._data_dir is not None:
            data_dir, self._data_dir = self._data_dir, None
            await asyncio.to_thread(shutil.rmtree, data_dir, True)

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- inspection and control -----------------------------------------------------------
    @property
    def state(self) -> SandboxState:
        if self._state is None:
            raise RuntimeError("sandbox not started")
        return self._state

    @property
    def token(self) -> str:
        return self.config.token

    @property
    def data_dir(self) -> Path:
        if self._data_dir is None:
            raise RuntimeError("sandbox not started")
        return self._data_dir

    @property
    def request_log(self) -> list[RequestRecord]:
        """(method, path without query, status) of every API/storage request, in order;
        `.truncated` / `.sent` say when a response was cut short."""
        return self.state.request_log

    def jobs(self) -> list[dict[str, Any]]:
        """Every job ever created (oldest first): the public object + uploaded_ids + name."""
        return [
            record
            for job in self.state.store.all()
            if (record := job_record(self.state, job.id)) is not None
        ]

    def job(self, job_id: str) -> dict[str, Any] | None:
        return job_record(self.state, job_id)

    def expected_results(
        self, job_type: str, ids: list[str] | list[int] | Any
    ) -> dict[str, dict[str, Any]]:
        """{id: result row} for the non-compliant IDs among `ids` under this sandbox's seed."""
        truth = self.state.truth(job_type)
        results: dict[str, dict[str, Any]] = {}
        for item in ids:
            raw = str(item).strip().encode()
            if not raw.isdigit() or len(raw) > 19:
                raise ValueError(f"not an ID: {item!r}")
            if truth.is_affected(raw):
                results[raw.decode()] = truth.row(raw)
        return results

    def expected_rows(self, job_type: str, ids: Iterable[str | int]) -> list[dict[str, Any]]:
        """Every result row for the non-compliant IDs among `ids`, in input order: unlike
        `expected_results`, a repeated ID (`repeated_fraction`) gives both of its rows."""
        truth = self.state.truth(job_type)
        rows: list[dict[str, Any]] = []
        for item in ids:
            raw = str(item).strip().encode()
            if not raw.isdigit() or len(raw) > 19:
                raise ValueError(f"not an ID: {item!r}")
            if truth.is_affected(raw):
                rows.extend(truth.rows(raw))
        return rows

    def configure(self, **changes: Any) -> None:
        """Change tunable settings while running (e.g. shorter upload/download windows)."""
        self.config.update(changes)

    def reset_rate_limits(self) -> None:
        self.state.limiter.reset()
