"""List the modules of orchestrator/ that have no test module of their own.

    python tests/helpers/untested_modules.py

The mirror: orchestrator/<layer>/<name>.py is tested by tests/<layer>/test_<name>.py and a
shared module orchestrator/<name>.py by tests/test_<name>.py. The sandbox's tests are grouped
by behaviour (tests/sandbox/test_sandbox_<topic>.py), so its modules are not listed. Scenario
tests in tests/e2e/ cover modules too, but a module named here has no unit tests of its own.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())


def test_module_for(module: Path) -> Path:
    relative = module.relative_to(REPO / "orchestrator")
    return REPO / "tests" / relative.parent / f"test_{module.stem}.py"


def untested() -> list[Path]:
    modules = sorted((REPO / "orchestrator").rglob("*.py"))
    return [m for m in modules if m.stem not in ("__init__", "__main__")
            and "sandbox" not in m.relative_to(REPO).parts[1:2]
            and not test_module_for(m).exists()]


if __name__ == "__main__":
    missing = untested()
    for module in missing:
        print(f"{module.relative_to(REPO)}  (no {test_module_for(module).relative_to(REPO)})")
    sys.exit(0)
