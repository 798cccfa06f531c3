"""A throw-away SQLite file that answers "which result rows belong to these IDs" for the
splitting of one batch's results per input, with flat memory however many IDs there are.

Not the state database: no durability (journal and fsync off), deleted when closed.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

# Every distinct result row is kept: X answers one ID with several rows (scrub_geo and
# delete). Byte-identical rows of one ID are one row: a pack uploads an ID once per input
# holding it, and X repeats its answer per occurrence; each input then gets the rows once per
# occurrence in *its* IDs, as its own job would have. `seq` (position in the download) keeps
# X's order, as a single-file batch has it.
_SCHEMA = (
    "CREATE TABLE results (id TEXT NOT NULL, line BLOB NOT NULL, seq INTEGER NOT NULL,"
    " PRIMARY KEY (id, line)) WITHOUT ROWID"
)
_INSERT_RESULT = "INSERT OR IGNORE INTO results (id, line, seq) VALUES (?, ?, ?)"
_CREATE_MEMBER = "CREATE TEMP TABLE member (id TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID"
_INSERT_MEMBER = (
    "INSERT INTO member (id, n) VALUES (?, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1"
)
# CROSS JOIN keeps `member` the outer loop: work in proportion to this input, not the batch.
_MEMBER_ROWS = (
    "SELECT r.line, m.n FROM member m CROSS JOIN results r ON r.id = m.id ORDER BY r.seq"
)
_DROP_MEMBER = "DROP TABLE member"


class _ScratchFile:
    """A throw-away SQLite file: no journal, no fsync, removed when closed."""

    schema = ""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.unlink(missing_ok=True)
        self._conn = sqlite3.connect(path, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=OFF")
        self._conn.execute("PRAGMA synchronous=OFF")
        self._conn.execute(self.schema)

    def close(self) -> None:
        self._conn.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


class ResultIndex(_ScratchFile):
    """Result lines keyed by ID, in download order; see _SCHEMA for how repeats count."""

    schema = _SCHEMA

    def add(self, rows: Iterable[tuple[str, bytes]]) -> None:
        """Store (id, line) pairs in download order, in one transaction."""
        self._conn.execute("BEGIN")
        self._conn.executemany(_INSERT_RESULT,
                               ((key, line, seq) for seq, (key, line) in enumerate(rows)))
        self._conn.execute("COMMIT")

    def lines_for(self, ids: Iterable[str]) -> Iterator[bytes]:
        """The stored lines whose id is one of `ids`, once per time the id occurs there, in
        download order. Consume it fully before the next call."""
        self._conn.execute(_CREATE_MEMBER)
        try:
            self._conn.execute("BEGIN")
            self._conn.executemany(_INSERT_MEMBER, ((value,) for value in ids))
            self._conn.execute("COMMIT")
            for line, occurrences in self._conn.execute(_MEMBER_ROWS):
                for _ in range(occurrences):
                    yield line
        finally:
            # A generator abandoned midway may be finalised after close(): nothing to drop.
            with contextlib.suppress(sqlite3.ProgrammingError):
                self._conn.execute(_DROP_MEMBER)

class ReasonIndex(_ScratchFile):
    """The reasons X gives, by ID (`deleted`, `scrub_geo`, ...), for writing a compliant
    copy of an input in its own order: looked up a block of IDs at a time, memory flat."""

    schema = ("CREATE TABLE reasons (id TEXT NOT NULL, reason TEXT NOT NULL,"
              " PRIMARY KEY (id, reason)) WITHOUT ROWID")

    def add(self, rows: Iterable[tuple[str, str]]) -> None:
        """Store (id, reason) pairs, in one transaction."""
        self._conn.execute("BEGIN")
        self._conn.executemany("INSERT OR IGNORE INTO reasons (id, reason) VALUES (?, ?)", rows)
        self._conn.execute("COMMIT")

    def reasons_for(self, ids: Iterable[str]) -> dict[str, set[str]]:
        """{id: reasons} for those of `ids` X listed (one block of an input at a time)."""
        found: dict[str, set[str]] = {}
        self._conn.execute("CREATE TEMP TABLE wanted (id TEXT PRIMARY KEY) WITHOUT ROWID")
        try:
            self._conn.execute("BEGIN")
            self._conn.executemany("INSERT OR IGNORE INTO wanted (id) VALUES (?)",
                                   ((value,) for value in ids))
            self._conn.execute("COMMIT")
            for key, reason in self._conn.execute(
                "SELECT r.id, r.reason FROM wanted w CROSS JOIN reasons r ON r.id = w.id"
            ):
                found.setdefault(key, set()).add(reason)
        finally:
            self._conn.execute("DROP TABLE wanted")
        return found
