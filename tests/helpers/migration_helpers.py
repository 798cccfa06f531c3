"""Migration folders made up for tests: a three-step history, and a way to lay it out."""

from __future__ import annotations

from pathlib import Path

MIGRATIONS = {
    "0001_initial.sql": """
        -- the first schema
        CREATE TABLE parents (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
        CREATE TABLE children (
            id INTEGER PRIMARY KEY,
            parent_id INTEGER NOT NULL REFERENCES parents (id) ON DELETE CASCADE,
            note TEXT NOT NULL DEFAULT 'a;b'  /* a quoted ; is not a statement end */
        );
    """,
    "0002_add_events.sql": """
        CREATE TABLE events (id INTEGER PRIMARY KEY, what TEXT NOT NULL);
        CREATE TRIGGER parents_logged AFTER INSERT ON parents
        BEGIN
            INSERT INTO events (what) VALUES ('parent ' || NEW.name);
        END;
    """,
    "0003_rebuild_parents.sql": """
        -- SQLite's table-rebuild procedure: new table, copy, drop old, rename.
        CREATE TABLE parents_new (id INTEGER PRIMARY KEY, name TEXT NOT NULL, kind TEXT);
        INSERT INTO parents_new (id, name) SELECT id, name FROM parents;
        DROP TABLE parents;
        ALTER TABLE parents_new RENAME TO parents;
        CREATE TRIGGER parents_logged AFTER INSERT ON parents
        BEGIN
            INSERT INTO events (what) VALUES ('parent ' || NEW.name);
        END;
    """,
}


def make_dir(root: Path, files: dict[str, str], name: str = "migrations") -> Path:
    folder = root / name
    folder.mkdir()
    for file_name, sql in files.items():
        (folder / file_name).write_text(sql, encoding="utf-8")
    return folder


def first(files: dict[str, str], count: int) -> dict[str, str]:
    return dict(list(files.items())[:count])
