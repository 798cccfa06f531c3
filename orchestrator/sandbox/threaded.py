"""`SandboxThread`: the sandbox on its own event loop in a background thread.

For synchronous callers (benchmarks, scripts, a requests-based client) and for tests that
want the sandbox off the event loop they measure:

    with SandboxThread(SandboxConfig(processing_time_s=0)) as sb:
        requests.post(f"{sb.base_url}/2/compliance/jobs", ...)
        sb.clock.advance(60); sb.faults.add("get", "503")

Clock and faults are thread-safe; `jobs()` and `expected_results()` run on the sandbox loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from orchestrator.sandbox.clock import SandboxClock
from orchestrator.sandbox.config import SandboxConfig
from orchestrator.sandbox.faults import Faults
from orchestrator.sandbox.record import RequestRecord
from orchestrator.sandbox.server import Sandbox

T = TypeVar("T")


class SandboxThread:
    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 30.0,
    ) -> None:
        self.sandbox = Sandbox(config, host=host, port=port)
        self._timeout = startup_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    @property
    def base_url(self) -> str:
        return self.sandbox.base_url

    @property
    def token(self) -> str:
        return self.sandbox.token

    @property
    def clock(self) -> SandboxClock:
        return self.sandbox.clock

    @property
    def faults(self) -> Faults:
        return self.sandbox.faults

    @property
    def config(self) -> SandboxConfig:
        return self.sandbox.config

    def start(self) -> SandboxThread:
        started: concurrent.futures.Future[None] = concurrent.futures.Future()

        async def main() -> None:
            self._stopped = asyncio.Event()
            try:
                await self.sandbox.start()
            except BaseException as exc:
                started.set_exception(exc)
                return
            started.set_result(None)
            try:
                await self._stopped.wait()
            finally:
                await self.sandbox.stop()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(main())
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="sandbox", daemon=True)
        self._thread.start()
        started.result(timeout=self._timeout)
        return self

    def call(self, function: Callable[[], T]) -> T:
        """Run `function` on the sandbox loop (consistent reads of its state)."""

        async def wrapper() -> T:
            return function()

        return self.run(wrapper())

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            raise RuntimeError("sandbox thread not started")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(self._timeout)

    def jobs(self) -> list[dict[str, Any]]:
        return self.call(self.sandbox.jobs)

    def expected_results(self, job_type: str, ids: Any) -> dict[str, dict[str, Any]]:
        return self.sandbox.expected_results(job_type, ids)  # pure: no loop needed

    @property
    def request_log(self) -> list[RequestRecord]:
        return self.call(lambda: list(self.sandbox.request_log))

    def stop(self) -> None:
        loop, thread, stopped = self._loop, self._thread, self._stopped
        if loop is None or thread is None or stopped is None:
            return
        loop.call_soon_threadsafe(stopped.set)
        thread.join(self._timeout)
        self._loop = self._thread = None

    def __enter__(self) -> SandboxThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
