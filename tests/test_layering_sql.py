"""No SQL outside orchestrator/store/: every query goes through the store's narrow interface
(the one a second backend has to implement). Finds SQL statements in string literals with
the ast module (docstrings and comments may talk about SQL) and names file:line."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "orchestrator"
STORE = PACKAGE / "store"

_SQL = re.compile(
    r"""^\s*(
        SELECT\s | WITH\s+\w+\s+AS\s*\( |
        INSERT\s+(OR\s+\w+\s+)?INTO\s | REPLACE\s+INTO\s |
        UPDATE\s+\w+\s+SET\s | DELETE\s+FROM\s |
        CREATE\s+(TEMP\s+|TEMPORARY\s+|UNIQUE\s+)?(TABLE|INDEX|TRIGGER|VIEW)\s |
        DROP\s+(TABLE|INDEX|TRIGGER|VIEW)\s | ALTER\s+TABLE\s |
        PRAGMA\s+\w | VACUUM\b |
        BEGIN(\s+(IMMEDIATE|DEFERRED|EXCLUSIVE))?(\s+TRANSACTION)?\s*;?\s*$ |
        (COMMIT|ROLLBACK|END)(\s+TRANSACTION)?\s*;?\s*$
    )""",
    re.VERBOSE,
)


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def sql_literals(source: str) -> list[tuple[int, str]]:
    """(line, text) of each string literal (or f-string's leading text) that is SQL."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    hits = []
    for node in ast.walk(tree):
        text = None
        if isinstance(node, ast.JoinedStr):
            first = node.values[0] if node.values else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                text = first.value
                skip.add(id(first))
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and id(node) not in skip):
            text = node.value
        if text is not None and _SQL.match(text):
            hits.append((node.lineno, text.strip().splitlines()[0][:60]))
    return hits


def test_no_sql_outside_the_store() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if STORE in path.parents:
            continue
        for line, text in sql_literals(path.read_text(encoding="utf-8")):
            offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {text!r}")
    assert not offenders, "SQL outside orchestrator/store/:\n" + "\n".join(offenders)


@pytest.mark.parametrize("sql", [
    'x = "SELECT id FROM batches"',
    'conn.execute("PRAGMA user_version")',
    'conn.execute(f"UPDATE inputs SET {cols} WHERE id = ?")',
    'q = ("INSERT OR IGNORE INTO results (id) "\n     "VALUES (?)")',
    'conn.execute("BEGIN IMMEDIATE")',
    'conn.execute("CREATE TEMP TABLE member (id TEXT)")',
    'conn.execute("DELETE FROM inputs WHERE id = ?")',
])
def test_the_check_finds_sql(sql: str) -> None:
    assert [line for line, _text in sql_literals(sql)] == [1]


@pytest.mark.parametrize("text", [
    '"""Every write runs in `BEGIN IMMEDIATE`; SELECT what you need."""',
    'def f():\n    """UPDATE batches SET state in one transaction."""',
    'msg = "select a file, then update the token"',
    'msg = "Begin again"',
    'log.info("store.wal_unavailable")',
])
def test_the_check_ignores_prose(text: str) -> None:
    assert sql_literals(text) == []
