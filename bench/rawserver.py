"""A raw loopback server for the floor: bytes in, bytes out, and just enough of X's job API.

    python bench/rawserver.py --result BODY [--port 0]

It prints one JSON line (`{"port": N, "base_url": ...}`) once it listens on 127.0.0.1, then
serves until killed. No signing, no emulation, no processing time, nothing stored:

- `PUT` of an upload URL reads the body (Content-Length or chunked) into one reused buffer and
  throws it away; the resumable protocol (POST `x-goog-resumable: start`, PUTs with
  `Content-Range`, `bytes */N` status queries, 308 + `Range`) the same way;
- `GET` of a download URL sends the prepared result body with `os.sendfile` (Range
  supported), with its `x-goog-hash: crc32c=...` computed once at start;
- `POST /2/compliance/jobs` creates a job whose URLs point here, `GET /2/compliance/jobs/ID`
  says `complete` once its upload arrived, `GET /2/compliance/jobs` lists them.

So a daemon can run end to end against it (nothing subtracted), and curl can move the same
bytes through the same URLs: the ratio of the two is the daemon's own cost.
"""

from __future__ import annotations

import argparse
import base64
import email.utils
import json
import os
import socket
import socketserver
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

BUFFER = 1 << 20
HEAD_LIMIT = 64 << 10


@dataclass
class Job:
    id: str
    type: str
    name: str
    resumable: bool
    created: datetime
    received: int = 0
    uploaded: bool = False


class State:
    def __init__(self, result: Path, port: int) -> None:
        self.result = result
        self.size = result.stat().st_size
        self.crc = _crc32c_b64(result)
        self.base = f"http://127.0.0.1:{port}"
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        self.next_id = 1_460_000_000_000_000_000

    def create(self, body: dict[str, Any]) -> Job:
        with self.lock:
            self.next_id += 1
            job = Job(str(self.next_id), str(body.get("type", "tweets")),
                      str(body.get("name", "")), bool(body.get("resumable", False)),
                      datetime.now(UTC).replace(microsecond=0))
            self.jobs[job.id] = job
        return job

    def public(self, job: Job) -> dict[str, Any]:
        return {
            "id": job.id, "type": job.type, "name": job.name, "resumable": job.resumable,
            "status": "complete" if job.uploaded else "created",
            "created_at": _ts(job.created),
            "upload_url": f"{self.base}/upload/{job.id}?X-Goog-Signature=raw",
            "upload_expires_at": _ts(job.created + timedelta(minutes=15)),
            "download_url": f"{self.base}/download/{job.id}?X-Goog-Signature=raw",
            "download_expires_at": _ts(job.created + timedelta(days=7)),
        }


def _ts(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _crc32c_b64(path: Path) -> str:
    import google_crc32c

    checksum = google_crc32c.Checksum()
    with open(path, "rb") as handle:
        while block := handle.read(8 << 20):
            checksum.update(block)
    return base64.b64encode(checksum.digest()).decode()


class Handler(socketserver.BaseRequestHandler):
    """One keep-alive connection: requests parsed by hand, bodies never copied twice."""

    state: State  # set on the class by main()

    def setup(self) -> None:
        self.sock: socket.socket = self.request
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pending = b""  # bytes read past the last request's head
        self.buffer = bytearray(BUFFER)
        self.view = memoryview(self.buffer)

    def handle(self) -> None:
        try:
            while self._one():
                pass
        except (ConnectionError, TimeoutError):
            return

    # ---- reading ------------------------------------------------------------------------

    def _head(self) -> bytes | None:
        data = self.pending
        while b"\r\n\r\n" not in data:
            if len(data) > HEAD_LIMIT:
                raise ConnectionError("head too long")
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, self.pending = data.split(b"\r\n\r\n", 1)
        return head

    def _recv(self, limit: int) -> int:
        """Up to `limit` body bytes into the buffer (the leftover of the head first)."""
        if self.pending:
            n = min(limit, len(self.pending))
            self.view[:n] = self.pending[:n]
            self.pending = self.pending[n:]
            return n
        n = self.sock.recv_into(self.view, min(limit, BUFFER))
        if n == 0:
            raise ConnectionError("peer closed mid-body")
        return n

    def _discard(self, length: int) -> int:
        left = length
        while left:
            left -= self._recv(left)
        return length

    def _line(self) -> bytes:
        while b"\r\n" not in self.pending:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("peer closed mid-chunk")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\r\n", 1)
        return line

    def _discard_chunked(self) -> int:
        total = 0
        while size := int(self._line().split(b";")[0], 16):
            total += self._discard(size)
            self._line()
        while self._line():  # trailers
            pass
        return total

    def _body(self, headers: dict[str, str]) -> int:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            return self._discard_chunked()
        return self._discard(int(headers.get("content-length", "0")))

    def _json_body(self, headers: dict[str, str]) -> dict[str, Any]:
        length = int(headers.get("content-length", "0"))
        data = b""
        while len(data) < length:
            n = self._recv(length - len(data))
            data += bytes(self.view[:n])
        parsed: dict[str, Any] = json.loads(data or b"{}")
        return parsed

    # ---- answering ----------------------------------------------------------------------

    def _send(self, status: int, reason: str, body: bytes = b"",
              headers: dict[str, str] | None = None) -> None:
        lines = [f"HTTP/1.1 {status} {reason}", f"Date: {email.utils.formatdate(usegmt=True)}",
                 f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    def _json(self, payload: dict[str, Any], status: int = 200) -> None:
        now = int(time.time())
        self._send(status, "OK", json.dumps(payload).encode(), {
            "Content-Type": "application/json",
            "x-rate-limit-limit": "150", "x-rate-limit-remaining": "149",
            "x-rate-limit-reset": str(now + 900),
        })

    def _one(self) -> bool:
        head = self._head()
        if head is None:
            return False
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, _version = request_line.split(" ", 2)
        headers = {}
        for line in header_lines:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        if headers.get("expect", "").lower() == "100-continue":
            self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        url = urlsplit(target)
        parts = url.path.strip("/").split("/")
        state = self.state
        if parts[:3] == ["2", "compliance", "jobs"]:
            if method == "POST":
                self._json({"data": state.public(state.create(self._json_body(headers)))})
            elif len(parts) == 4:
                self._body(headers)
                job = state.jobs.get(parts[3])
                if job is None:
                    self._json({"errors": [{"message": "not found"}]}, 404)
                else:
                    self._json({"data": state.public(job)})
            else:
                self._body(headers)
                wanted = parse_qs(url.query).get("type", ["tweets"])[0]
                listed = [state.public(j) for j in reversed(state.jobs.values())
                          if j.type == wanted]
                self._json({"data": listed, "meta": {"result_count": len(listed)}}
                           if listed else {"meta": {"result_count": 0}})
        elif len(parts) == 2 and parts[0] in ("upload", "session") and parts[1] in state.jobs:
            self._upload(method, parts[0], state.jobs[parts[1]], headers)
        elif len(parts) == 2 and parts[0] == "download" and method == "GET":
            self._body(headers)
            self._download(headers)
        else:
            self._body(headers)
            self._send(404, "Not Found")
        return headers.get("connection", "").lower() != "close"

    def _upload(self, method: str, kind: str, job: Job, headers: dict[str, str]) -> None:
        if kind == "upload" and method == "POST":  # resumable session start
            self._body(headers)
            self._send(201, "Created", headers={"Location": f"{self.state.base}/session/{job.id}"})
            return
        if method != "PUT":
            self._body(headers)
            self._send(405, "Method Not Allowed")
            return
        spec = headers.get("content-range", "")
        received = self._body(headers)
        if kind == "upload" or not spec:  # one streamed PUT of the whole body
            job.received, job.uploaded = received, True
            self._send(200, "OK")
            return
        span, _, total_text = spec.removeprefix("bytes ").partition("/")
        total = int(total_text)
        if span != "*":
            job.received = int(span.split("-")[1]) + 1
        if job.received >= total:
            job.uploaded = True
            self._send(200, "OK")
        elif job.received:
            self._send(308, "Resume Incomplete", headers={"Range": f"bytes=0-{job.received - 1}"})
        else:
            self._send(308, "Resume Incomplete")

    def _download(self, headers: dict[str, str]) -> None:
        state = self.state
        start = 0
        wanted = headers.get("range", "")
        if wanted.startswith("bytes=") and wanted.endswith("-"):
            start = int(wanted[6:-1])
        length = state.size - start
        extra = {"Content-Type": "text/plain", "x-goog-hash": f"crc32c={state.crc}"}
        head = [f"Date: {email.utils.formatdate(usegmt=True)}", f"Content-Length: {length}"]
        head += [f"{k}: {v}" for k, v in extra.items()]
        status = "200 OK"
        if start:
            status = "206 Partial Content"
            head.append(f"Content-Range: bytes {start}-{state.size - 1}/{state.size}")
        self.sock.sendall((f"HTTP/1.1 {status}\r\n" + "\r\n".join(head) + "\r\n\r\n").encode())
        with open(state.result, "rb") as body:
            offset = start
            while offset < state.size:
                sent = os.sendfile(self.sock.fileno(), body.fileno(), offset, state.size - offset)
                if sent == 0:
                    raise ConnectionError("peer closed mid-download")
                offset += sent


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--result", type=Path, required=True, help="the result body to serve")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    with Server(("127.0.0.1", args.port), Handler) as server:
        port = server.server_address[1]
        Handler.state = State(args.result, port)
        print(json.dumps({"port": port, "base_url": f"http://127.0.0.1:{port}"}), flush=True)
        server.serve_forever(poll_interval=0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
