"""What users install: the sdist, the wheel built from it, the hash-pinned runtime lock, in a
fresh venv per supported CPython, run from a folder outside the checkout.

The sdist is built first and the wheel from the unpacked sdist (as `python -m build` does), so
a file the sdist forgets fails here. The venv gets `pip install --require-hashes -r
requirements/runtime.txt` (PyPI; pip's cache makes reruns fast) and the wheel with
`--no-deps`, exactly as deploy/INSTALL.md says. Then `demo`, `migrate` and `check-config`
run with cwd in tmp_path and no PYTHONPATH: migrations, the sandbox and every data file
must come from the wheel.

Interpreters: the oldest and newest CPython that requires-python admits (3.11 and 3.13; 3.12
when present). A missing one is skipped locally with a message; under CI=true it fails, since
the supported range in pyproject must be tested, not assumed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from orchestrator import __version__

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements" / "runtime.txt"
TESTED = ("3.11", "3.12", "3.13")  # requires-python >=3.11: the oldest .. the newest released
MUST_HAVE = ("3.11", "3.13")  # the ends of the range: CI fails without them


def _find_python(version: str) -> Path | None:
    """`pythonX.Y` on PATH, else a pyenv build (the machine image ships them there)."""
    candidates: list[Path] = []
    if sys.version_info[:2] == tuple(map(int, version.split("."))):
        candidates.append(Path(sys.executable))
    on_path = shutil.which(f"python{version}")
    if on_path:
        candidates.append(Path(on_path))
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted(pyenv_root.glob(f"versions/{version}.*/bin/python{version}"), reverse=True)
    for candidate in candidates:
        probe = subprocess.run(
            [str(candidate), "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, timeout=30, check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


def _run(argv: list[str], cwd: Path, timeout: float = 300,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False,
        env=env if env is not None else _clean_env(),
    )
    assert result.returncode == 0, f"{argv}\n{result.stdout}\n{result.stderr}"
    return result


def _clean_env() -> dict[str, str]:
    """No trace of the checkout or of the test venv: the installed package must stand alone."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "X_BEARER_TOKEN"}}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sdist, wheel): the sdist from the checkout, the wheel from the unpacked sdist."""
    out = tmp_path_factory.mktemp("dist")
    hatchling = [sys.executable, "-m", "hatchling", "build"]
    _run([*hatchling, "-t", "sdist", "-d", str(out)], cwd=REPO)
    sdist = next(out.glob("compliance_orchestrator-*.tar.gz"))
    unpacked = tmp_path_factory.mktemp("sdist")
    with tarfile.open(sdist) as archive:
        archive.extractall(unpacked, filter="data")
    source = next(unpacked.iterdir())
    _run([*hatchling, "-t", "wheel", "-d", str(out)], cwd=source)
    wheel = next(out.glob("compliance_orchestrator-*.whl"))
    return sdist, wheel


def test_the_artifacts_carry_the_version_and_every_shipped_file(
    artifacts: tuple[Path, Path],
) -> None:
    sdist, wheel = artifacts
    assert sdist.name == f"compliance_orchestrator-{__version__}.tar.gz"
    assert wheel.name == f"compliance_orchestrator-{__version__}-py3-none-any.whl"
    names = set(zipfile.ZipFile(wheel).namelist())
    migrations = sorted(p.name for p in (REPO / "migrations").glob("*.sql"))
    assert migrations and all(f"orchestrator/migrations/{m}" in names for m in migrations)
    assert "orchestrator/store/schema.sql" in names
    data = [p.relative_to(REPO).as_posix() for p in (REPO / "orchestrator").rglob("*")
            if p.is_file() and p.suffix not in {".py", ".pyc"} and "__pycache__" not in p.parts]
    assert set(data) <= names, sorted(set(data) - names)
    assert not any(n.startswith("tests/") for n in names)
    metadata = zipfile.ZipFile(wheel).read(
        f"compliance_orchestrator-{__version__}.dist-info/METADATA").decode()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert f"Requires-Python: {project['requires-python']}" in metadata


@pytest.mark.parametrize("version", TESTED)
def test_a_fresh_venv_from_the_lock_and_the_wheel_runs_the_demo(
    version: str, artifacts: tuple[Path, Path], tmp_path: Path
) -> None:
    python = _find_python(version)
    if python is None:
        message = f"CPython {version} is not installed (PATH or $PYENV_ROOT/versions)"
        if os.environ.get("CI") == "true" and version in MUST_HAVE:
            pytest.fail(f"{message}: CI must test both ends of requires-python")
        pytest.skip(message)
    _, wheel = artifacts
    venv = tmp_path / "venv"
    _run([str(python), "-m", "venv", str(venv)], cwd=tmp_path)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    _run([*pip, "--require-hashes", "-r", str(LOCK)], cwd=tmp_path)
    _run([*pip, "--no-deps", str(wheel)], cwd=tmp_path)

    work = tmp_path / "operator"
    work.mkdir()
    cli = str(venv / "bin" / "compliance-orchestrator")
    assert _run([cli, "--version"], cwd=work).stdout.strip() == (
        f"compliance-orchestrator {__version__}")
    where = _run([str(venv / "bin" / "python"), "-c",
                  "import orchestrator, orchestrator.store.migrate as m; "
                  "print(orchestrator.__file__); print(m.migrations_dir())"], cwd=work)
    module_file, migrations = where.stdout.split()
    site = venv / "lib" / f"python{version}" / "site-packages"
    assert Path(module_file).is_relative_to(site) and Path(migrations).is_relative_to(site)

    demo = _run([cli, "demo", "--workdir", str(work / "demo")], cwd=work, timeout=180)
    assert demo.stdout.count("matches sandbox truth") == 3, demo.stdout
    assert "rejected whole" in demo.stdout

    config = work / "demo" / "config.toml"
    migrate = _run([cli, "migrate", "--config", str(config), "--json"], cwd=work / "demo")
    report = json.loads(migrate.stdout)  # the demo's database, made from the wheel's files
    newest = max(int(p.name[:4]) for p in (REPO / "migrations").glob("*.sql"))
    assert (report["status"], report["to_version"]) == ("up to date", newest)
    env = {**_clean_env(), "X_BEARER_TOKEN": "installed-wheel-token"}
    checked = _run([cli, "check-config", "--config", str(config)], cwd=work, env=env)
    assert checked.stdout.startswith(f"config OK: {config}")
    assert "installed-wheel-token" not in checked.stdout
    broken = work / "broken.toml"
    broken.write_text("[paths]\ninbox = 3\n")
    refused = subprocess.run([cli, "check-config", "--config", str(broken)], cwd=work, env=env,
                             capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2 and refused.stderr.startswith("config error:")
