"""Check that requirements/*.txt (written by ./scripts/lock) still match pyproject.toml.

Usage: python scripts/check_lock.py [pyproject.toml] [requirements-dir]; exit 1 with one line
per problem. tests/test_lock.py runs it on the real files and on altered copies.

A lock agrees with pyproject when: every requirement of pyproject (runtime, plus the extra
the lock is for) is pinned with `==` and every pin of it satisfies pyproject's specifier; the
lock names no direct dependency that pyproject lacks (uv annotates those "via
compliance-orchestrator (pyproject.toml)"); every pin carries a hash (pip --require-hashes
refuses the file otherwise); and the test lock pins the runtime packages exactly as the
runtime lock does, so CI tests the versions production runs.
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT_VIA = "compliance-orchestrator (pyproject.toml)"
# lock file -> the optional extras it covers besides the runtime dependencies
LOCKS: dict[str, tuple[str, ...]] = {
    "runtime.txt": (), "postgresql.txt": ("postgresql",), "test.txt": ("test", "postgresql"),
}
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?\s*$")


@dataclass
class Pin:
    name: str
    version: str
    marker: str | None
    hashes: int = 0
    via: list[str] = field(default_factory=list)


def parse_lock(text: str) -> list[Pin]:
    """The pins of a `uv pip compile --generate-hashes` file, with their hashes and `# via`."""
    pins: list[Pin] = []
    in_via = False
    for raw in text.splitlines():
        line = raw.strip()
        match = _PIN.match(raw)
        if match:
            name, version, marker = match.groups()
            pins.append(Pin(canonicalize_name(name), version, marker))
            in_via = False
        elif not pins or not line:
            continue
        elif line.startswith("--hash="):
            pins[-1].hashes += 1
        elif line.startswith("# via "):
            pins[-1].via.append(line.removeprefix("# via ").strip())
            in_via = False
        elif line == "# via":
            in_via = True
        elif in_via and line.startswith("#   "):
            pins[-1].via.append(line.removeprefix("#   ").strip())
    return pins


def wanted(pyproject: Path, extras: tuple[str, ...]) -> dict[str, Requirement]:
    project = tomllib.loads(pyproject.read_text())["project"]
    specs = list(project.get("dependencies", []))
    for extra in extras:
        specs += project.get("optional-dependencies", {}).get(extra, [])
    return {canonicalize_name(r.name): r for r in map(Requirement, specs)}


def lock_problems(lock: Path, requirements: dict[str, Requirement]) -> list[str]:
    if not lock.is_file():
        return [f"{lock.name}: missing; run ./scripts/lock"]
    pins = parse_lock(lock.read_text())
    problems: list[str] = []
    by_name: dict[str, list[Pin]] = {}
    for pin in pins:
        by_name.setdefault(pin.name, []).append(pin)
        if pin.hashes == 0:
            problems.append(f"{lock.name}: {pin.name}=={pin.version} has no --hash")
    for name, requirement in sorted(requirements.items()):
        found = by_name.get(name)
        if not found:
            problems.append(f"{lock.name}: {requirement} is in pyproject.toml but not pinned")
            continue
        for pin in found:
            if not requirement.specifier.contains(pin.version, prereleases=True):
                problems.append(
                    f"{lock.name}: {name}=={pin.version} does not satisfy pyproject's "
                    f"'{requirement}'"
                )
    direct = {pin.name for pin in pins if PROJECT_VIA in pin.via}
    for name in sorted(direct - set(requirements)):
        problems.append(f"{lock.name}: {name} is a direct dependency in the lock only")
    return problems


def problems(pyproject: Path, requirements_dir: Path) -> list[str]:
    found: list[str] = []
    for lock_name, extras in LOCKS.items():
        found += lock_problems(requirements_dir / lock_name, wanted(pyproject, extras))
    test = requirements_dir / "test.txt"
    for installed in ("runtime.txt", "postgresql.txt"):  # what production installs
        runtime = requirements_dir / installed
        if runtime.is_file() and test.is_file():
            production = {(p.name, p.version) for p in parse_lock(runtime.read_text())}
            tested = {(p.name, p.version) for p in parse_lock(test.read_text())}
            for name, version in sorted(production - tested):
                found.append(f"test.txt: does not pin {name}=={version} as {installed} does")
    if found:
        found.append("relock with ./scripts/lock (see the header of scripts/lock)")
    return found


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parents[1]
    pyproject = Path(argv[0]) if argv else root / "pyproject.toml"
    requirements_dir = Path(argv[1]) if len(argv) > 1 else root / "requirements"
    found = problems(pyproject, requirements_dir)
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
