#!/usr/bin/env python3
"""A compliance-orchestrator hook that applies a delivered result to stored tweets in SQLite.

    [[hooks]]
    on = "delivered"
    command = ["/usr/bin/python3", "/opt/compliance/apply_to_sqlite.py", "--db", "/srv/tweets.db"]

The table (created if missing) is `tweets (id TEXT PRIMARY KEY, author_id TEXT, text TEXT,
geo_json TEXT)`. For a Tweets result, every listed ID is deleted except where the reason is
`scrub_geo`, whose geo is cleared; for a Users result, the tweets of every listed user are
deleted. Idempotent by COMPLIANCE_IDEMPOTENCY_KEY: the keys applied are recorded in
`compliance_applied` in the same transaction as the changes, so a run repeated after a crash
(hooks are at-least-once) changes nothing. The results file is streamed, never held whole.
Only the Python standard library is used; exit 0 = applied (or already applied).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

CHUNK = 10_000  # rows per executemany


def _rows(results: Path) -> Iterator[tuple[str, str]]:
    with open(results, encoding="utf-8") as stream:
        for line in stream:
            if line.strip():
                row = json.loads(line)
                yield str(row["id"]), str(row.get("reason") or "")


def _chunks(rows: Iterator[tuple[str, str]]) -> Iterator[list[tuple[str, str]]]:
    chunk: list[tuple[str, str]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def prepare(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS tweets (id TEXT PRIMARY KEY, author_id TEXT,"
                 " text TEXT, geo_json TEXT)")
    conn.execute("CREATE INDEX IF NOT EXISTS tweets_author ON tweets (author_id)")
    conn.execute("CREATE TABLE IF NOT EXISTS compliance_applied (key TEXT PRIMARY KEY,"
                 " job_type TEXT, input TEXT, deleted INTEGER, scrubbed INTEGER,"
                 " applied_at TEXT DEFAULT CURRENT_TIMESTAMP)")


def apply(db: Path, results: Path, job_type: str, key: str, name: str = "") -> str:
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    try:
        prepare(conn)
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("SELECT 1 FROM compliance_applied WHERE key = ?", (key,)).fetchone():
                conn.execute("ROLLBACK")
                return f"{key}: already applied, nothing changed"
            deleted = scrubbed = 0
            for chunk in _chunks(_rows(results)):
                if job_type == "users":
                    before = conn.total_changes
                    conn.executemany("DELETE FROM tweets WHERE author_id = ?",
                                     [(i,) for i, _ in chunk])
                    deleted += conn.total_changes - before
                    continue
                scrub = [(i,) for i, reason in chunk if reason == "scrub_geo"]
                gone = [(i,) for i, reason in chunk if reason != "scrub_geo"]
                before = conn.total_changes
                conn.executemany("UPDATE tweets SET geo_json = NULL WHERE id = ?", scrub)
                scrubbed += conn.total_changes - before
                before = conn.total_changes
                conn.executemany("DELETE FROM tweets WHERE id = ?", gone)
                deleted += conn.total_changes - before
            conn.execute("INSERT INTO compliance_applied (key, job_type, input, deleted,"
                         " scrubbed) VALUES (?, ?, ?, ?, ?)",
                         (key, job_type, name, deleted, scrubbed))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()
    return f"{key}: deleted {deleted} row(s), cleared geo of {scrubbed}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True, help="the SQLite database file")
    args = parser.parse_args(argv)
    env = os.environ
    if env.get("COMPLIANCE_EVENT") != "delivered":
        print(f"nothing to do for event {env.get('COMPLIANCE_EVENT')!r}")
        return 0
    try:
        message = apply(args.db, Path(env["COMPLIANCE_RESULTS"]), env["COMPLIANCE_JOB_TYPE"],
                        env["COMPLIANCE_IDEMPOTENCY_KEY"], env.get("COMPLIANCE_INPUT", ""))
    except (OSError, sqlite3.Error, ValueError, KeyError) as error:
        print(f"apply failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1  # non-zero: the daemon tries again with backoff
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
