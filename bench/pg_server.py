"""A real, throwaway PostgreSQL server: initdb + pg_ctl from the installed binaries (the
newest /usr/lib/postgresql/*/bin, or $PG_BINDIR), listening on a unix socket in a temp dir
only (no TCP: listen_addresses = ''), fsync off unless `durable` (it is thrown away).

One copy for the tests (tests/helpers/pg_server.py: the session fixture, skip or fail when
the binaries are missing) and the benchmarks (bench/failover.py): plain Python, no pytest
and no orchestrator import. As root, initdb and postgres refuse to run: they run as
`postgres` (else `nobody`) through `runuser -u`, with the temp dir handed to that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 60


def find_bindir() -> Path | None:
    """The newest installed server's bin directory (with initdb and pg_ctl), or None."""
    configured = os.environ.get("PG_BINDIR")
    candidates = [Path(configured)] if configured else sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True,
    )
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    return None


def _run_as() -> list[str]:
    """The prefix running a server command as an unprivileged user when we are root."""
    if os.geteuid() != 0:
        return []
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return ["runuser", "-u", name, "--"]
    raise RuntimeError("running as root and neither `postgres` nor `nobody` exists")


@dataclass
class PgServer:
    bindir: Path
    root: Path  # the temp dir: data/ and the socket

    @property
    def socket_dir(self) -> Path:
        return self.root

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host={self.socket_dir} port=5432 user=postgres dbname={dbname}"

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        result = subprocess.run(
            [str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-d", self.dsn(dbname), "-c", sql],
            capture_output=True, text=True, timeout=60, check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def stop(self) -> None:
        subprocess.run(
            [*_run_as(), str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast",
             "-w", "stop"], capture_output=True, timeout=60, check=False,
        )


def start_server(bindir: Path, *, durable: bool = False) -> PgServer:
    """Initialise and start a server; `durable` keeps fsync on (the default settings of a
    real server: what a benchmark compares), else fsync, synchronous_commit and full-page
    writes are off (the tests throw it away)."""
    root = Path(tempfile.mkdtemp(prefix="co-pg-"))
    prefix = _run_as()
    if prefix:
        user = pwd.getpwnam(prefix[2])
        os.chown(root, user.pw_uid, user.pw_gid)
    root.chmod(0o700)
    data = root / "data"
    subprocess.run(
        [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
         "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"],
        capture_output=True, text=True, timeout=START_TIMEOUT_S, check=True,
    )
    options = f"-c listen_addresses='' -c unix_socket_directories='{root}' -c max_connections=200"
    if not durable:
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    started = subprocess.run(
        [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l",
         str(root / "server.log"), "-w", "-t", str(START_TIMEOUT_S), "start"],
        capture_output=True, text=True, timeout=START_TIMEOUT_S + 10, check=False,
    )
    server = PgServer(bindir, root)
    if started.returncode != 0:
        log = (root / "server.log").read_text(errors="replace")[-2000:]
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"pg_ctl start failed: {started.stderr.strip()}\n{log}")
    deadline = time.monotonic() + START_TIMEOUT_S
    while not (root / ".s.PGSQL.5432").exists():  # pg_ctl -w waited; the socket is there
        if time.monotonic() > deadline:
            raise RuntimeError("the PostgreSQL socket did not appear")
        time.sleep(0.05)
    return server


def missing() -> str | None:
    """Why no server can be started here (None: it can)."""
    if find_bindir() is None:
        return "no initdb/pg_ctl under /usr/lib/postgresql/*/bin (or $PG_BINDIR)"
    if shutil.which("runuser") is None and os.geteuid() == 0:
        return "running as root without runuser"
    return None
