"""One version (orchestrator.__version__, semver), printed by --version, with a changelog entry."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from orchestrator import __version__

REPO = Path(__file__).resolve().parents[1]
SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?")


def test_the_version_is_semver_and_has_a_changelog_entry() -> None:
    assert SEMVER.fullmatch(__version__), __version__
    headings = re.findall(r"^## \[([^\]]+)\]", (REPO / "CHANGELOG.md").read_text(), re.M)
    assert headings[0] == "Unreleased"
    assert headings[1] == __version__  # the newest release is this version
    assert "0.1.0" in headings


def test_version_flag_prints_the_package_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "--version"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"compliance-orchestrator {__version__}"
