"""Optional loopback HTTP listener: /healthz for liveness checks, /metrics for Prometheus.

Off by default (`[health] enabled`). It shares the daemon's event loop, so a blocked loop
also shows here as a timeout. No access log: a scraper every 15 s would drown the journal.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog
from aiohttp import web

from orchestrator.daemon.metrics import CONTENT_TYPE, Metrics

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Verdict:
    healthy: bool
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Condition:
    """An ongoing run of failures (daemon.incidents): what, for how long, the last cause."""

    name: str  # "x_unreachable" | "outbox_unwritable" | "spool_unwritable"
    age_s: float
    failures: int
    last_error: str
    last_error_msg: str


_SAYS = {
    "x_unreachable": "the X API (or its storage) has been unreachable",
    "outbox_unwritable": "the outbox has been unwritable",
    "spool_unwritable": "the spool (state directory) has been unwritable",
}


def judge(
    *, phase: str, heartbeat_age_s: float, stale_after_s: float, paused: bool,
    conditions: Sequence[Condition] = (), unhealthy_after_s: float = 300.0,
) -> Verdict:
    """Healthy while running with a fresh heartbeat and usable credentials, and while no
    outage (X unreachable, outbox or spool unwritable) has lasted over unhealthy_after_s."""
    detail: dict[str, Any] = {"phase": phase, "heartbeat_age_s": round(heartbeat_age_s, 1)}
    if conditions:
        detail["conditions"] = {
            c.name: {"for_s": round(c.age_s, 1), "failures": c.failures,
                     "last_error": c.last_error, "last_error_msg": c.last_error_msg}
            for c in conditions
        }
    if phase != "running":
        return Verdict(False, phase, detail)  # "starting" | "stopping"
    if heartbeat_age_s > stale_after_s:
        return Verdict(
            False, f"runner heartbeat is {heartbeat_age_s:.0f} s old "
            f"(limit {stale_after_s:.0f} s): a lane is stuck", detail,
        )
    if paused:
        return Verdict(False, "paused: the X API refused the credentials", detail)
    lasting = [c for c in conditions if c.age_s > unhealthy_after_s]
    if lasting:
        worst = max(lasting, key=lambda c: c.age_s)
        return Verdict(
            False, f"{_SAYS.get(worst.name, worst.name)} for {worst.age_s:.0f} s "
            f"(limit {unhealthy_after_s:.0f} s, {worst.failures} failures; last: "
            f"{worst.last_error}: {worst.last_error_msg})", detail,
        )
    return Verdict(True, "ok", detail)


def build_app(check: Callable[[], Verdict], metrics: Metrics) -> web.Application:
    async def healthz(_request: web.Request) -> web.Response:
        verdict = check()
        body = {"status": "ok" if verdict.healthy else "unhealthy", "reason": verdict.reason,
                **verdict.detail}
        return web.json_response(
            body, status=200 if verdict.healthy else 503, dumps=json.dumps,
            headers={"Cache-Control": "no-store"},
        )

    async def metrics_page(_request: web.Request) -> web.Response:
        return web.Response(
            body=metrics.render(), headers={"Content-Type": CONTENT_TYPE,
                                            "Cache-Control": "no-store"},
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    return app


class HealthServer:
    """`await group.start(server.run)`: listening once started; `port` is the bound port."""

    def __init__(self, host: str, port: int, check: Callable[[], Verdict], metrics: Metrics):
        # "localhost" may resolve to ::1 and 127.0.0.1, each with its own free port under
        # port 0; one address keeps `port` meaningful.
        self.host = "127.0.0.1" if host == "localhost" else host
        self.requested_port = port
        self.port: int | None = None
        self._app = build_app(check, metrics)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        runner = web.AppRunner(self._app, handle_signals=False, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.requested_port)
            await site.start()
            self.port = int(runner.addresses[0][1])
            log.info("health.listening", host=self.host, port=self.port,
                     urls=[f"http://{self._url_host}:{self.port}/{p}"
                           for p in ("healthz", "metrics")])
            task_status.started()
            await anyio.sleep_forever()
        finally:
            with anyio.move_on_after(5, shield=True):
                await runner.cleanup()

    @property
    def _url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host
