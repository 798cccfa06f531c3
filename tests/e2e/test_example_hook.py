"""examples/apply_to_sqlite.py as a real hook of the daemon: a delivered result is applied to
a real SQLite table of stored tweets (deletions deleted, scrub_geo's geo cleared), and running
it again with the same key changes nothing."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from daemon_helpers import db_rows, drop, load, make_ids, running_service, wait_for, write_config
from hook_helpers import add_entries

from orchestrator.sandbox import Sandbox

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "apply_to_sqlite.py"


def _table(db: Path) -> dict[str, str | None]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT id, geo_json FROM tweets"))


async def test_the_example_hook_applies_a_delivery_to_sqlite_once(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    db = tmp_path / "tweets.db"
    ids = make_ids(21, 3000)
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE tweets (id TEXT PRIMARY KEY, author_id TEXT, text TEXT,"
                     " geo_json TEXT)")
        conn.executemany("INSERT INTO tweets VALUES (?, 'a', 'hello', '{\"place\":1}')",
                         [(i,) for i in ids])
    command = [sys.executable, str(EXAMPLE), "--db", str(db)]
    config = load(add_entries(write_config(tmp_path, sandbox.base_url), "hooks",
                              {"on": "delivered", "command": command, "timeout_s": 60}))
    async with running_service(config):
        drop(tmp_path, "tweets", "stored.txt", ids)
        await wait_for(lambda: [r["state"] for r in db_rows(
            tmp_path, "SELECT state FROM hook_runs")] == ["done"], timeout=60,
            what="the example hook")
    results = [json.loads(line) for line in
               (tmp_path / "outbox" / "tweets" / "stored.jsonl").read_text().splitlines()]
    reasons: dict[str, set[str]] = {}
    for row in results:
        reasons.setdefault(row["id"], set()).add(row["reason"])
    gone = {i for i, r in reasons.items() if r - {"scrub_geo"}}
    scrubbed = {i for i, r in reasons.items() if r == {"scrub_geo"}}
    assert gone and scrubbed, "the sandbox's seed gives both kinds"
    after = _table(db)
    assert set(after) == set(ids) - gone
    assert {i for i, geo in after.items() if geo is None} == scrubbed
    # At-least-once: the same delivery again (same key) changes nothing.
    [run] = db_rows(tmp_path, "SELECT idempotency_key FROM hook_runs")
    env = {"PATH": "/usr/bin:/bin", "COMPLIANCE_EVENT": "delivered",
           "COMPLIANCE_JOB_TYPE": "tweets", "COMPLIANCE_IDEMPOTENCY_KEY": run["idempotency_key"],
           "COMPLIANCE_RESULTS": str(tmp_path / "outbox" / "tweets" / "stored.jsonl")}
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO tweets VALUES (?, 'a', 'back', NULL)", (sorted(gone)[0],))
    again = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    assert "already applied" in again.stdout
    assert sorted(gone)[0] in _table(db)  # not deleted a second time: the key was recorded
    with sqlite3.connect(db) as conn:
        [(deleted, scrubs)] = conn.execute("SELECT deleted, scrubbed FROM compliance_applied")
    assert (deleted, scrubs) == (len(gone), len(scrubbed))
