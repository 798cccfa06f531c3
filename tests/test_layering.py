"""The folder tree is the architecture: each subpackage is a layer, and imports go one way.

core is pure (it imports nothing of ours but errors); store, remote and files build on core;
daemon composes them; cli drives daemon and store; nobody imports cli; the sandbox imports
only the plain data model. A break names the file, the line and the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "orchestrator"

# Top-level modules every layer may use; they import only core and each other.
SHARED = frozenset({"errors", "config", "credentials", "layout", "logs", "redact", "clock",
                    "wakeup", "__init__", "__main__"})

# layer -> the layers it may import (a layer may always import itself).
ALLOWED_IMPORTS: dict[str, frozenset[str]] = {
    "core": frozenset({"errors"}),
    "shared": frozenset({"shared", "core"}),
    "store": frozenset({"shared", "core"}),
    "remote": frozenset({"shared", "core"}),
    "files": frozenset({"shared", "core"}),
    "daemon": frozenset({"shared", "core", "store", "remote", "files"}),
    "cli": frozenset({"shared", "core", "store", "remote", "files", "daemon", "sandbox"}),
    "sandbox": frozenset({"core.model"}),
}


def layer_of(dotted: str) -> str:
    """`orchestrator.daemon.runner` -> `daemon`; `orchestrator.config` -> `shared`."""
    parts = dotted.split(".")
    if parts[0] != "orchestrator":
        raise ValueError(dotted)
    if len(parts) == 1 or parts[1] in SHARED:
        return "shared"
    return parts[1]


def module_name(path: Path, root: Path = PACKAGE) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """Every `orchestrator...` module this file imports, with the line, including imports
    inside functions (a lazy import is still a dependency)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names
                      if a.name.split(".")[0] == "orchestrator"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "orchestrator":
                continue
            if node.module == "orchestrator":
                # `from orchestrator import x`: x is a module or a name of the package root.
                for alias in node.names:
                    is_module = (root / alias.name).is_dir() or (
                        root / f"{alias.name}.py").exists()
                    found.append((node.lineno, f"orchestrator.{alias.name}" if is_module
                                  else "orchestrator"))
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.append((node.lineno, f"<relative import level {node.level}>"))
    return found


def allowed(importer: str, imported: str) -> bool:
    if importer == "orchestrator.__main__":
        return imported == "orchestrator.cli"  # `python -m orchestrator`: the entry point
    src, dst = layer_of(importer), layer_of(imported)
    if src == dst:
        return True
    rules = ALLOWED_IMPORTS[src]
    if src == "sandbox":
        return imported == "orchestrator.core.model" or imported.startswith(
            "orchestrator.core.model.")
    if src == "core":
        return imported == "orchestrator.errors"
    return dst in rules


def violations(root: Path = PACKAGE) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        importer = module_name(path, root)
        for line, imported in imports_of(path, root):
            if imported.startswith("<relative"):
                problems.append(f"{path.relative_to(root.parent)}:{line}: {imported} "
                                "(use absolute imports)")
            elif not allowed(importer, imported):
                problems.append(
                    f"{path.relative_to(root.parent)}:{line}: {layer_of(importer)} module "
                    f"{importer} imports {imported} ({layer_of(imported)})")
    return problems


def test_every_import_follows_the_layer_rules() -> None:
    assert violations() == []


def test_layers_are_one_level_deep_and_known() -> None:
    nested = [str(p.relative_to(PACKAGE)) for p in PACKAGE.glob("*/*/__init__.py")]
    assert nested == [], "subpackages are one level deep"
    layers = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert layers == set(ALLOWED_IMPORTS) - {"shared"}
    shared = {p.stem for p in PACKAGE.glob("*.py")}
    assert shared <= SHARED, f"unexpected top-level modules: {sorted(shared - SHARED)}"


@pytest.mark.parametrize(
    ("importer", "imported", "ok"),
    [
        ("orchestrator.core.machine", "orchestrator.errors", True),
        ("orchestrator.core.machine", "orchestrator.config", False),
        ("orchestrator.core.machine", "orchestrator.store.sqlite", False),
        ("orchestrator.store.sqlite", "orchestrator.core.model", True),
        ("orchestrator.store.sqlite", "orchestrator.files.atomic", False),
        ("orchestrator.remote.xapi", "orchestrator.daemon.runner", False),
        ("orchestrator.daemon.runner", "orchestrator.remote.xapi", True),
        ("orchestrator.daemon.runner", "orchestrator.cli.main", False),
        ("orchestrator.cli.status", "orchestrator.store.reports", True),
        ("orchestrator.sandbox.jobs", "orchestrator.core.model", True),
        ("orchestrator.sandbox.jobs", "orchestrator.core.machine", False),
        ("orchestrator.sandbox.jobs", "orchestrator.errors", False),
        ("orchestrator.config", "orchestrator.daemon.service", False),
        ("orchestrator.__main__", "orchestrator.cli", True),
        ("orchestrator.logs", "orchestrator.cli", False),
    ],
)
def test_the_rules_themselves(importer: str, imported: str, ok: bool) -> None:
    assert allowed(importer, imported) is ok


def test_a_break_is_named_with_file_and_line(tmp_path: Path) -> None:
    root = tmp_path / "orchestrator"
    (root / "core").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "core" / "__init__.py").write_text("")
    (root / "core" / "bad.py").write_text(
        "import json\n\n\ndef f():\n    from orchestrator.store.sqlite import Store\n")
    assert violations(root) == [
        "orchestrator/core/bad.py:5: core module orchestrator.core.bad imports "
        "orchestrator.store.sqlite (store)"
    ]
