"""Helpers for hook tests: a hook script driven by files, config entries, a webhook receiver."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from aiohttp import web

# The hook: records its environment, then behaves as files in its folder say:
#   fail-once  -> the first run creates `failed-once` and exits 3
#   slow       -> sleeps that many seconds (after writing `started-<key>`)
#   child      -> starts a grandchild (`sleep 120`) that writes its pid to `child.pid`
HOOK_SCRIPT = r'''
import json, os, subprocess, sys, time
from pathlib import Path
folder = Path(sys.argv[1])
key = os.environ.get("COMPLIANCE_IDEMPOTENCY_KEY", "none")
attempt = os.environ.get("COMPLIANCE_ATTEMPT", "0")
(folder / f"env-{key}-{attempt}-{os.getpid()}.json").write_text(json.dumps(dict(os.environ)))
(folder / f"started-{key}").write_text(str(os.getpid()))
if (folder / "loud").exists():
    print("x" * 100_000)
print("hook output Authorization: Bearer abcdef0123 done", flush=True)
if (folder / "child").exists():
    child = subprocess.Popen(["sleep", "120"])
    (folder / "child.pid").write_text(str(child.pid))
if (folder / "fail-once").exists() and not (folder / "failed-once").exists():
    (folder / "failed-once").write_text("")
    sys.exit(3)
if (folder / "slow").exists():
    time.sleep(float((folder / "slow").read_text() or "5"))
(folder / f"finished-{key}").write_text(str(time.time()))
'''


def hook_script(folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "hook.py"
    script.write_text(HOOK_SCRIPT)
    return [sys.executable, str(script), str(folder)]


def toml_entry(table: str, values: dict[str, Any]) -> str:
    lines = [f"\n[[{table}]]"]
    for key, value in values.items():
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def add_entries(config_path: Path, table: str, *entries: dict[str, Any]) -> Path:
    with open(config_path, "a") as f:
        for entry in entries:
            f.write(toml_entry(table, entry))
    return config_path


def envs(folder: Path) -> list[dict[str, str]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("env-*.json"))]


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1: answers the next statuses in `answers` (then 200)."""

    answers: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        status = self.answers.pop(0) if self.answers else 200
        return web.Response(status=status, text=f"answer {status}")


@asynccontextmanager
async def receiver(*answers: int) -> AsyncIterator[Receiver]:
    found = Receiver(list(answers))
    app = web.Application()
    app.router.add_post("/hook", found.handle)

    async def slow(request: web.Request) -> web.Response:
        found.received.append((dict(request.headers), await request.read()))
        await anyio.sleep(5)
        return web.Response(status=200)

    app.router.add_post("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    found.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield found
    finally:
        await runner.cleanup()
