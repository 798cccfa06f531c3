"""Drive a sandbox in another process: the `/_sandbox` controls and the CLI as a child.

    with SandboxProcess(["--processing-time", "0"]) as proc:
        proc.remote.add_fault("upload", "500", count=2)
        ... point the daemon at proc.base_url with proc.token ...

Synchronous and dependency-free (urllib, subprocess) so any test or benchmark can use it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Sequence
from types import TracebackType
from typing import IO, Any

from orchestrator.sandbox.record import RequestRecord


class SandboxRemote:
    """Client for the HTTP controls of a running sandbox."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        # Loopback only: never route control calls through an environment proxy.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _call(self, method: str, path: str, body: Any = None, *, raw: bool = False) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - our own loopback URL
            f"{self.base_url}/_sandbox{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with self._opener.open(request, timeout=self.timeout) as response:
            content = response.read()
        return content if raw else json.loads(content)

    def info(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "")
        return result

    def health(self) -> bool:
        return bool(self._call("GET", "/health").get("ok"))

    def now(self) -> str:
        return str(self._call("GET", "/clock")["now"])

    def advance(self, seconds: float) -> str:
        return str(self._call("POST", "/clock", {"advance": seconds})["now"])

    def freeze(self, frozen: bool = True) -> str:
        return str(self._call("POST", "/clock", {"freeze": frozen})["now"])

    def add_fault(self, endpoint: str, kind: str, count: int = 1, **options: Any) -> None:
        self._call(
            "POST", "/faults", {"endpoint": endpoint, "kind": kind, "count": count, **options}
        )

    def faults(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/faults")["faults"])

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def fail_next_jobs(self, count: int = 1, error: str = "Internal error") -> None:
        self._call("POST", "/fail_next_jobs", {"count": count, "error": error})

    def configure(self, **changes: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/config", changes)["config"]
        return result

    def jobs(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/jobs")["jobs"])

    def expected_results(self, job_type: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        result: dict[str, dict[str, Any]] = self._call(
            "POST", "/expected", {"type": job_type, "ids": list(ids)}
        )["results"]
        return result

    def job_expected_rows(self, job_id: str) -> list[dict[str, Any]]:
        content = self._call("GET", f"/jobs/{job_id}/expected", raw=True)
        return [json.loads(line) for line in content.splitlines() if line.strip()]

    def requests(self) -> list[RequestRecord]:
        entries = self._call("GET", "/requests")["requests"]
        return [RequestRecord.from_public(item) for item in entries]

    def reset_rate_limits(self) -> None:
        self._call("POST", "/rate_limits/reset", {})


class SandboxProcess:
    """`compliance-orchestrator sandbox ARGS...` as a child process, until stop()."""

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        log_file: str | os.PathLike[str] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.args = list(args)
        self.log_file = log_file
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.base_url = ""
        self.token = ""
        self.ready: dict[str, Any] = {}

    def start(self) -> SandboxProcess:
        argv = [sys.executable, "-m", "orchestrator", "sandbox", *self.args]
        if self.log_file is not None:
            argv += ["--log-file", os.fspath(self.log_file)]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.process.stdout is not None
        line = _readline(self.process.stdout, self.startup_timeout)
        if not line:
            code = self.process.wait(timeout=self.startup_timeout)
            raise RuntimeError(f"sandbox exited with {code} before it was ready")
        self.ready = json.loads(line)
        self.base_url = self.ready["base_url"]
        self.token = self.ready["token"]
        return self

    @property
    def remote(self) -> SandboxRemote:
        return SandboxRemote(self.base_url)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code (0 after a clean stop)."""
        if self.process is None:
            return 0
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()
        finally:
            if process.stdout is not None:
                process.stdout.close()

    def __enter__(self) -> SandboxProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _readline(stream: IO[bytes], timeout: float) -> bytes:
    """One line from a pipe, with a deadline (a thread: pipes have no portable timeout)."""
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        raise TimeoutError("the sandbox did not report ready in time")
    return result[0] if result else b""
