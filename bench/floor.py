"""The floor: what moving the same bytes costs without the daemon.

A job is created and polled with plain urllib calls (not timed); the timed part is one raw
streaming PUT of the file to the job's upload URL and one raw GET of its result file, with
curl when present (C, streaming from and to disk), else a bare aiohttp loop.

The floor that counts is taken against `RawServer` (bench/rawserver.py: bytes in, bytes out,
no signing, no emulation); the same transfer through the sandbox is reported beside it, so
that the emulator's own cost is never mistaken for the daemon's.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only


def api(base_url: str, token: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 - the sandbox on 127.0.0.1
        f"{base_url}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with OPENER.open(request, timeout=60) as response:
        result: dict[str, Any] = json.loads(response.read())
    return result


def create_job(base_url: str, token: str, name: str) -> dict[str, Any]:
    job: dict[str, Any] = api(base_url, token, "POST", "/2/compliance/jobs",
                              {"type": "tweets", "name": name})["data"]
    return job


def wait_complete(base_url: str, token: str, job_id: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while api(base_url, token, "GET", f"/2/compliance/jobs/{job_id}")["data"]["status"] \
            != "complete":
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} did not complete")
        time.sleep(0.01)


def _curl(*args: str) -> None:
    subprocess.run(
        ["curl", "--silent", "--show-error", "--fail", "--globoff", "--noproxy", "*", *args],
        check=True, stdout=subprocess.DEVNULL,
    )


async def _aiohttp_put(url: str, path: Path) -> None:
    import aiohttp
    import yarl

    handle = await asyncio.to_thread(open, path, "rb", buffering=0)

    async def chunks() -> Any:
        while block := await asyncio.to_thread(handle.read, 1 << 20):
            yield block

    try:
        async with aiohttp.ClientSession() as session, session.put(
            yarl.URL(url, encoded=True), data=chunks(),
            headers={"Content-Type": "text/plain", "Content-Length": str(path.stat().st_size)},
        ) as response:
            response.raise_for_status()
    finally:
        handle.close()


async def _aiohttp_get(url: str, dest: Path) -> None:
    import aiohttp
    import yarl

    out = await asyncio.to_thread(open, dest, "wb")
    try:
        async with aiohttp.ClientSession() as session, \
                session.get(yarl.URL(url, encoded=True)) as response:
            response.raise_for_status()
            async for block in response.content.iter_chunked(1 << 20):
                await asyncio.to_thread(out.write, block)
    finally:
        out.close()


def put(url: str, path: Path) -> None:
    if shutil.which("curl"):
        # -T streams the file; no `Expect: 100-continue` round trip.
        _curl("-T", str(path), "-H", "Content-Type: text/plain", "-H", "Expect:", url)
    else:
        asyncio.run(_aiohttp_put(url, path))


def get(url: str, dest: Path) -> None:
    if shutil.which("curl"):
        _curl("-o", str(dest), url)
    else:
        asyncio.run(_aiohttp_get(url, dest))


def tool() -> str:
    return "curl" if shutil.which("curl") else "aiohttp"


def transfer(base_url: str, token: str, path: Path, workdir: Path,
             keep: Path | None = None) -> dict[str, float]:
    """Timed PUT + GET of `path` through a fresh job; returns seconds and result bytes.
    `keep`: where to leave the result file (else it is removed)."""
    job = create_job(base_url, token, f"floor-{time.time_ns()}")
    started = time.perf_counter()
    put(job["upload_url"], path)
    put_s = time.perf_counter() - started
    wait_complete(base_url, token, job["id"])
    dest = workdir / "floor-result.json"
    started = time.perf_counter()
    get(job["download_url"], dest)
    get_s = time.perf_counter() - started
    # Not part of the floor (curl does not fsync), but the daemon writes its outbox durably:
    # how long making the downloaded bytes durable takes, for the notes.
    started = time.perf_counter()
    with open(dest, "rb") as handle:
        os.fsync(handle.fileno())
    fsync_s = time.perf_counter() - started
    size = dest.stat().st_size
    if keep is None:
        dest.unlink()
    else:
        dest.rename(keep)
    return {"put_s": put_s, "get_s": get_s, "total_s": put_s + get_s, "result_bytes": size,
            "fsync_s": fsync_s}


class RawServer:
    """bench/rawserver.py as a child process on 127.0.0.1, serving `result` on every GET."""

    def __init__(self, result: Path) -> None:
        self.result = result
        self.process: subprocess.Popen[bytes] | None = None
        self.base_url = ""
        self.token = "raw-server-ignores-the-token"  # noqa: S105 - not a secret

    def __enter__(self) -> RawServer:
        script = Path(__file__).with_name("rawserver.py")
        self.process = subprocess.Popen(
            [sys.executable, str(script), "--result", str(self.result)],
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"raw server exited with {self.process.wait()}")
        self.base_url = json.loads(line)["base_url"]
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
