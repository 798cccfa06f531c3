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


class ResultIndex:
    """Result lines keyed by ID; the first line added for an ID wins."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.unlink(missing_ok=True)
        self._conn = sqlite3.connect(path, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=OFF")
        self._conn.execute("PRAGMA synchronous=OFF")
        self._conn.execute("CREATE TABLE results (id TEXT PRIMARY KEY, line BLOB) WITHOUT ROWID")

    def add(self, rows: Iterable[tuple[str, bytes]]) -> None:
        """Store (id, line) pairs, in one transaction."""
        self._conn.execute("BEGIN")
        self._conn.executemany("INSERT OR IGNORE INTO results (id, line) VALUES (?, ?)", rows)
        self._conn.execute("COMMIT")

    def lines_for(self, ids: Iterable[str]) -> Iterator[bytes]:
        """The stored lines whose id is one of `ids` (each once). Consume it fully before the
        next call."""
        self._conn.execute("CREATE TEMP TABLE member (id TEXT PRIMARY KEY) WITHOUT ROWID")
        try:
            self._conn.execute("BEGIN")
            self._conn.executemany("INSERT OR IGNORE INTO member (id) VALUES (?)",
                                   ((value,) for value in ids))
            self._conn.execute("COMMIT")
            for (line,) in self._conn.execute(
                "SELECT r.line FROM results r JOIN member m ON m.id = r.id"
            ):
                yield line
        finally:
            # A generator abandoned midway may be finalised after close(): nothing to drop.
            with contextlib.suppress(sqlite3.ProgrammingError):
                self._conn.execute("DROP TABLE member")

    def close(self) -> None:
        self._conn.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> ResultIndex:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
