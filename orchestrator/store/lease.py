"""The write transaction (fenced or not), the event row, the leader lease and the hosts.

Several hosts may share one store; exactly one of them, the lease holder, drives X. The lease
is one row (`lease`, name 'leader') with an epoch that goes up at every acquisition. The
leader sets its fence (`set_fence(host_id, epoch)`); from then on every FENCED write
transaction (batch transitions, batch forming, deliveries) checks, inside the same
transaction, that the lease row still names this host with this epoch and has not expired,
and otherwise rolls back and raises LeaseLost: a leader that lost its lease can never write
over its successor. Claims, heartbeats and operator commands are not fenced (every host
claims). "Now" is the store's clock (SQLite: the injected Clock; PostgreSQL: the server's).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import anyio

from orchestrator.clock import Clock, from_iso, iso
from orchestrator.core.model import ClusterView, HostRow
from orchestrator.errors import LeaseLost
from orchestrator.store.queries import Queries, SqlConnection

_FENCE_HOLDS = ("SELECT 1 FROM lease WHERE name = 'leader' AND holder = ? AND epoch = ?"
                " AND expires_at > ?")


class FencedWrites(Queries):
    """What every write of the store stands on: one transaction at a time, its event rows
    stamped with this store's host, the fence; and the lease and heartbeat operations."""

    # The engine's dialect (store/postgresql.py overrides these): how a write transaction
    # begins, how a NULL-safe comparison is spelt, how a read locks the rows it checks.
    BEGIN = "BEGIN IMMEDIATE"
    IS = "IS"
    FOR_UPDATE = ""
    # A UNIQUE or CHECK constraint refused the write.
    INTEGRITY_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)

    def __init__(self, conn: SqlConnection, clock: Clock,
                 host_id: str | None = None) -> None:
        super().__init__(conn)
        self.clock = clock
        self.host_id = host_id
        self._fence: tuple[str, int] | None = None
        # One connection is shared by the inbox and the lanes: transactions take turns.
        self._write_lock = anyio.Lock()

    @asynccontextmanager
    async def transaction(self, *, fenced: bool = False) -> AsyncIterator[SqlConnection]:
        """`BEGIN IMMEDIATE` ... `COMMIT`; with `fenced`, and while a fence is set, first check
        the lease (LeaseLost, nothing written, when this host no longer holds it)."""
        # Shielded: a shutdown arriving mid-transaction waits the few milliseconds it takes,
        # so a transition and its event row always commit or roll back together.
        with anyio.CancelScope(shield=True):
            async with self._write_lock:
                await self.conn.execute(self.BEGIN)
                try:
                    if fenced:
                        await self._check_fence()
                    yield self.conn
                except BaseException:
                    await self.conn.execute("ROLLBACK")
                    raise
                await self.conn.execute("COMMIT")

    async def _check_fence(self) -> None:
        if self._fence is None:
            return
        holder, epoch = self._fence
        now = self._ts(await self.lease_now())
        row = await self._fetch_one(_FENCE_HOLDS, (holder, epoch, now))
        if row is None:
            raise LeaseLost(f"host {holder} no longer holds the leader lease (epoch {epoch})")

    # Lease and host times: SQLite keeps them as ISO text from the store's clock; PostgreSQL
    # as timestamptz from the server's clock (overrides below).
    async def lease_now(self) -> datetime:
        """"Now" for the lease and the hosts."""
        return self.clock.now()

    def _ts(self, value: datetime) -> Any:
        return iso(value)

    def _read_ts(self, value: Any) -> datetime | None:
        return from_iso(value)

    def set_fence(self, host_id: str, epoch: int | None) -> None:
        """Fence this store's writes on the lease `epoch` held by `host_id` (None: unfenced,
        e.g. a standby's store, or a command-line tool's)."""
        self._fence = None if epoch is None else (host_id, epoch)

    async def _event(
        self, kind: str, *, batch_id: int | None = None, input_id: int | None = None,
        from_state: str | None = None, to_state: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        await self.conn.execute(
            "INSERT INTO events (at, batch_id, input_id, kind, from_state, to_state, detail_json,"
            " host_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (iso(self.clock.now()), batch_id, input_id, kind, from_state, to_state,
             json.dumps(dict(detail), sort_keys=True, default=str) if detail else None,
             self.host_id),
        )

    # ---- the lease ------------------------------------------------------------------------

    async def acquire_lease(self, host_id: str, ttl_s: float) -> int | None:
        """Take the lease if it is free, expired, or already this host's (the same host
        restarted: its per-host lock proves the old process is gone). The new epoch, or None
        while another host holds it."""
        async with self.transaction() as conn:
            now = await self.lease_now()
            expires = now + timedelta(seconds=ttl_s)
            cursor = await conn.execute(
                "UPDATE lease SET holder = ?, epoch = epoch + 1, acquired_at = ?, renewed_at = ?,"
                " expires_at = ? WHERE name = 'leader'"
                " AND (holder IS NULL OR holder = ? OR expires_at IS NULL OR expires_at < ?)"
                " RETURNING epoch",
                (host_id, self._ts(now), self._ts(now), self._ts(expires), host_id,
                 self._ts(now)),
            )
            row = await cursor.fetchone()
            if row is None:
                return None
            epoch = int(row[0])
            await self._event("cluster.lease_acquired", detail={"host": host_id, "epoch": epoch})
        return epoch

    async def renew_lease(self, host_id: str, epoch: int, ttl_s: float) -> bool:
        """Extend this host's lease of `epoch` by `ttl_s` from now; False when it is no longer
        this host's (taken over, or released). An expired lease nobody took yet renews."""
        async with self.transaction() as conn:
            now = await self.lease_now()
            cursor = await conn.execute(
                "UPDATE lease SET renewed_at = ?, expires_at = ? WHERE name = 'leader'"
                " AND holder = ? AND epoch = ? RETURNING epoch",
                (self._ts(now), self._ts(now + timedelta(seconds=ttl_s)), host_id, epoch),
            )
            return await cursor.fetchone() is not None

    async def release_lease(self, host_id: str, epoch: int) -> None:
        """Give the lease up (clean stop): a standby may take it at once."""
        async with self.transaction() as conn:
            now = self._ts(await self.lease_now())
            cursor = await conn.execute(
                "UPDATE lease SET holder = NULL, expires_at = ? WHERE name = 'leader'"
                " AND holder = ? AND epoch = ? RETURNING epoch",
                (now, host_id, epoch),
            )
            if await cursor.fetchone() is not None:
                await self._event("cluster.lease_released",
                                  detail={"host": host_id, "epoch": epoch})

    async def heartbeat(self, host_id: str, role: str, pid: int, version: str) -> None:
        """Upsert this host's row; `started_at` stays while the same process reports."""
        async with self.transaction() as conn:
            now = self._ts(await self.lease_now())
            await conn.execute(
                "INSERT INTO hosts (host_id, role, pid, version, started_at, last_seen)"  # noqa: S608
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (host_id) DO UPDATE SET"
                " role = excluded.role, version = excluded.version,"
                " last_seen = excluded.last_seen,"
                f" started_at = CASE WHEN hosts.pid {self.IS} excluded.pid THEN hosts.started_at"
                " ELSE excluded.started_at END, pid = excluded.pid",
                (host_id, role, pid, version, now, now),
            )

    async def cluster_view(self) -> ClusterView:
        lease = await self._fetch_one(
            "SELECT holder, epoch, acquired_at, renewed_at, expires_at FROM lease"
            " WHERE name = 'leader'")
        hosts = await self._fetch_all(
            "SELECT host_id, role, pid, version, started_at, last_seen FROM hosts"
            " ORDER BY host_id")
        now = await self.lease_now()
        rows = tuple(
            HostRow(host_id=r["host_id"], role=r["role"], pid=r["pid"], version=r["version"],
                    started_at=self._read_ts(r["started_at"]),
                    last_seen=self._read_ts(r["last_seen"]))
            for r in hosts
        )
        if lease is None:  # a database from before migration 0005 (read-only tools)
            return ClusterView(None, 0, None, None, None, now, rows)
        return ClusterView(
            holder=lease["holder"], epoch=int(lease["epoch"]),
            acquired_at=self._read_ts(lease["acquired_at"]),
            renewed_at=self._read_ts(lease["renewed_at"]),
            expires_at=self._read_ts(lease["expires_at"]), db_now=now, hosts=rows,
        )
