"""The state store: the only place that speaks SQL.

sqlite.Store (writes: transitions, claims, batches) on lease.FencedWrites (the write
transaction, the fence, event rows, the leader lease, the hosts) on queries.Queries (reads);
rows (row mapping, column sets); migrate (connection + migrations); reports (read-only
queries for `status`/`jobs`); schema (the schema.sql snapshot); scratch (a throw-away
index for splitting results).
"""

from orchestrator.store.sqlite import BatchPart, EventNote, StaleState, Store

__all__ = ["BatchPart", "EventNote", "StaleState", "Store"]
