"""Run twarc's own `twarc2` command line against the sandbox, never against the network.

    python twarc_loopback.py BASE_URL [twarc2 arguments...]

twarc hard-codes `https://api.twitter.com/2/...` in its Client2 methods (no setting or
environment variable moves it), so every `requests` call to that host is sent to BASE_URL
instead; everything else (the signed upload/download URLs, which already point at the
sandbox) is untouched. Any attempt to resolve or connect to a non-loopback address is
refused before a packet leaves and reported on stderr with NETWORK_MARK.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

NETWORK_MARK = "twarc_loopback: refused a non-loopback"
LOOPBACK = ("127.0.0.1", "::1", "localhost")
TWITTER = "https://api.twitter.com"


def _refuse(what: str) -> OSError:
    sys.stderr.write(f"{NETWORK_MARK} {what}\n")
    sys.stderr.flush()
    return ConnectionRefusedError(f"{NETWORK_MARK} {what}")


def _guard_sockets() -> None:
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def outside(sock: socket.socket, address: Any) -> bool:
        inet = sock.family in (socket.AF_INET, socket.AF_INET6)
        return inet and str(address[0]) not in LOOPBACK

    def connect(sock: socket.socket, address: Any) -> None:
        if outside(sock, address):
            raise _refuse(f"connection to {address!r}")
        real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        if outside(sock, address):
            raise _refuse(f"connection to {address!r}")
        return real_connect_ex(sock, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and str(host) not in LOOPBACK:
            raise _refuse(f"name lookup of {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo


def _redirect_twarc(base_url: str) -> None:
    import requests

    real_request = requests.Session.request

    def request(session: requests.Session, method: str, url: Any, *args: Any,
                **kwargs: Any) -> requests.Response:
        if isinstance(url, str) and url.startswith(TWITTER + "/"):
            url = base_url + url[len(TWITTER):]
        return real_request(session, method, url, *args, **kwargs)

    requests.Session.request = request  # type: ignore[method-assign]


def main(argv: list[str]) -> None:
    base_url, args = argv[0].rstrip("/"), argv[1:]
    _guard_sockets()
    _redirect_twarc(base_url)
    from twarc.command2 import twarc2

    twarc2.main(args=args, prog_name="twarc2")


if __name__ == "__main__":
    main(sys.argv[1:])
