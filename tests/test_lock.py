"""requirements/*.txt (the hash-pinned locks of ./scripts/lock) agree with pyproject.toml, and
the checker catches a dependency added, dropped or re-ranged without relocking."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECKER = REPO / "scripts" / "check_lock.py"


def _load_checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_lock", CHECKER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_lock"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


check_lock = _load_checker()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of pyproject.toml and requirements/ to alter."""
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(REPO / "requirements", tmp_path / "requirements")
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1))


def _check(root: Path) -> list[str]:
    return list(check_lock.problems(root / "pyproject.toml", root / "requirements"))


def test_the_checked_in_locks_match_pyproject() -> None:
    result = subprocess.run(
        [sys.executable, str(CHECKER)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


def test_every_runtime_dependency_is_pinned_with_hashes() -> None:
    pins = check_lock.parse_lock((REPO / "requirements" / "runtime.txt").read_text())
    names = {pin.name for pin in pins}
    for name in check_lock.wanted(REPO / "pyproject.toml", ()):
        assert name in names
    assert all(pin.hashes >= 1 for pin in pins)
    assert "pytest" not in names  # the test extra stays out of production


def test_a_dependency_added_without_relocking_fails(project: Path) -> None:
    assert _check(project) == []
    _edit(project / "pyproject.toml", 'dependencies = [\n', 'dependencies = [\n  "requests>=2",\n')
    found = _check(project)
    assert "runtime.txt: requests>=2 is in pyproject.toml but not pinned" in found
    # test.txt does pin requests (twarc needs it): only the runtime lock is short of it
    assert not any(line.startswith("test.txt: requests") for line in found)
    assert found[-1].startswith("relock with ./scripts/lock")
    result = subprocess.run(
        [sys.executable, str(CHECKER), str(project / "pyproject.toml"),
         str(project / "requirements")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 1 and "requests>=2" in result.stderr


def test_a_test_extra_added_without_relocking_fails(project: Path) -> None:
    _edit(project / "pyproject.toml", 'test = [\n', 'test = [\n  "pytest-xdist>=3",\n')
    assert _check(project)[0] == "test.txt: pytest-xdist>=3 is in pyproject.toml but not pinned"


def test_a_raised_lower_bound_the_pin_misses_fails(project: Path) -> None:
    _edit(project / "pyproject.toml", '"aiosqlite>=0.19"', '"aiosqlite>=99"')
    found = _check(project)
    assert any("aiosqlite==" in line and "does not satisfy pyproject's 'aiosqlite>=99'" in line
               for line in found)


def test_a_dropped_dependency_still_locked_as_direct_fails(project: Path) -> None:
    _edit(project / "pyproject.toml", '  "structlog>=24.1",', "")
    assert "runtime.txt: structlog is a direct dependency in the lock only" in _check(project)


def test_a_pin_without_hash_and_diverging_test_pins_fail(project: Path) -> None:
    runtime = project / "requirements" / "runtime.txt"
    text = runtime.read_text()
    start = text.index("structlog==")
    end = text.index("\n", start)
    version = text[start:end].split("==")[1].split()[0]
    # structlog at a different version, hashes gone: both the hash rule and the test-lock rule
    rest = text[end + 1 :]
    while rest.startswith("    --hash="):
        rest = rest[rest.index("\n") + 1 :]
    runtime.write_text(text[:start] + "structlog==24.1.0\n" + rest)
    found = _check(project)
    assert "runtime.txt: structlog==24.1.0 has no --hash" in found
    assert "test.txt: does not pin structlog==24.1.0 as runtime.txt does" in found
    assert version != "24.1.0"


def test_the_install_guides_install_from_the_lock_with_hashes() -> None:
    pinned = "pip install --require-hashes -r requirements/runtime.txt"
    for guide in (REPO / "deploy" / "INSTALL.md", REPO / "README.md"):
        text = guide.read_text()
        assert pinned in text, f"{guide.name} lacks {pinned!r}"
        assert "pip install --no-deps" in text, guide.name
