"""The real daemon on `[store] backend = "postgresql"` (a real throwaway server, an empty
database it migrates itself) against the sandbox: a file claimed, sent, delivered once, its
history in PostgreSQL with this host's id."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import psycopg
from daemon_helpers import drop, load, make_ids, outcome, read_results, running_service, wait_for
from daemon_helpers import write_config as write_test_config
from pg_server import PgServer

from orchestrator.cli import status
from orchestrator.clock import SystemClock
from orchestrator.layout import Layout
from orchestrator.sandbox import Sandbox


async def test_the_daemon_on_postgresql_delivers_a_file(
    tmp_path: Path, sandbox: Sandbox, pg_server: PgServer
) -> None:
    pg_server.psql("CREATE DATABASE co_e2e_daemon")  # empty: the daemon migrates it
    dsn = pg_server.dsn("co_e2e_daemon")
    path = write_test_config(tmp_path, sandbox.base_url)
    (tmp_path / "spool").mkdir()  # a cluster's spool is shared, beside the inbox
    text = path.read_text().replace("[paths]\n", '[paths]\nspool_dir = "spool"\n', 1)
    path.write_text(text + '\n[service]\nhost_id = "node-pg"\n\n'
                    f'[store]\nbackend = "postgresql"\ndsn = "{dsn}"\nlease_ttl_s = 6.0\n')
    ids = make_ids(7, 120)
    async with running_service(load(path)) as service:
        drop(tmp_path, "tweets", "ids.txt", ids)
        await wait_for(lambda: outcome(tmp_path, "tweets", "ids.txt") == "delivered",
                       timeout=60, what="the file delivered by the daemon on PostgreSQL")
        assert service.cluster is not None and service.cluster.is_leader
        # What `status` shows meanwhile: this host's daemon, the leader, the delivery.
        report = await anyio.to_thread.run_sync(
            lambda: status.collect(Layout.from_config(load(path)), SystemClock().now()))
        assert report["daemon_pid"] == os.getpid()
        assert report["cluster"]["leader"] == "node-pg"
        assert report["queue"]["tweets"]["delivered"] == 1
        assert report["recent"][0]["file"] == "ids.txt"
    assert read_results(tmp_path, "tweets", "ids") == sandbox.expected_results("tweets", ids)
    assert not (tmp_path / "state" / "state.db").exists(), "no SQLite state on this backend"
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute("SELECT state, id_count FROM inputs")
        assert await cursor.fetchall() == [("delivered", len(ids))]
        cursor = await conn.execute("SELECT state FROM batches")
        assert await cursor.fetchall() == [("done",)]
        cursor = await conn.execute("SELECT DISTINCT host_id FROM events WHERE host_id IS NOT"
                                    " NULL")
        assert await cursor.fetchall() == [("node-pg",)]
        cursor = await conn.execute("SELECT holder FROM lease")
        assert await cursor.fetchall() == [(None,)], "a clean stop releases the lease"
    creates = [r for r in sandbox.request_log if r.method == "POST" and "/jobs" in r.path]
    assert len(creates) == 1, "one remote job"
