"""Upgrade: state written by release 0.1.0 with work in flight is carried on by this code.

The fixtures (tests/fixtures/upgrade/*.tar.gz) were made by 0.1.0's own daemon and sandbox
(commit 0589e2a), SIGKILLed with batches in every stage: queued, creating, uploading,
waiting, downloading, delivering, and one file already delivered in full. The script that
made them, with why each resume path is the one a real upgrade meets, is
tests/fixtures/upgrade/make_fixture.py. Here the current daemon opens each state folder with
the operator's unchanged config (only the API address differs: a fresh sandbox), migrates it,
drains the queue in burst mode, and every input must be delivered exactly once with the
sandbox's truth. The refusal of a database newer than the code (a downgrade) is tested in
tests/store/test_migrate.py::test_newer_database_is_refused and
tests/cli/test_migrate.py::test_a_database_newer_than_the_program_is_refused.
"""

from __future__ import annotations

import json
import re
import sqlite3
import tarfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import drained, load, read_results, running_service

from orchestrator.sandbox import Sandbox
from orchestrator.store.migrate import list_migrations, migrations_dir

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "upgrade"
SCENARIOS = sorted(p.name.removesuffix(".tar.gz") for p in FIXTURES.glob("*.tar.gz"))
RELEASE_STAGES = {"queued", "creating", "uploading", "waiting", "downloading", "delivering"}


def _unpack(scenario: str, into: Path) -> dict[str, Any]:
    with tarfile.open(FIXTURES / f"{scenario}.tar.gz") as archive:
        archive.extractall(into, filter="data")
    meta: dict[str, Any] = json.loads((into / "meta.json").read_text())
    return meta


def _db(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_the_fixtures_cover_every_stage_of_release_0_1_0(tmp_path: Path) -> None:
    stages: set[str] = set()
    for scenario in SCENARIOS:
        meta = _unpack(scenario, tmp_path / scenario)
        assert meta["made_by"] == "0589e2a"
        stages |= {state for _, _, state in meta["at_kill"]["batches"]}
        db = tmp_path / scenario / "state" / "state.db"
        assert _db(db, "PRAGMA user_version") == [(2,)]  # 0.1.0 had migrations 0001, 0002
    assert stages >= RELEASE_STAGES | {"done"}


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_the_current_daemon_finishes_what_0_1_0_left(
    scenario: str, tmp_path: Path, make_sandbox: Callable[..., Sandbox]
) -> None:
    meta = _unpack(scenario, tmp_path)
    delivered_before = {
        p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "outbox").rglob("*.*")
    }
    async with make_sandbox(token=meta["token"], seed=meta["seed"], concurrency="per-type",
                            affected_fraction=meta["affected_fraction"]) as sandbox:
        config_path = tmp_path / "config.toml"
        old = config_path.read_text()
        config_path.write_text(re.sub(r'(?m)^base_url = ".*"$',
                                      f'base_url = "{sandbox.base_url}"', old))
        async with running_service(load(config_path), meta["token"]) as service:
            await drained(service, timeout=60)

        db = tmp_path / "state" / "state.db"
        newest = max(m.version for m in list_migrations(migrations_dir()))
        assert _db(db, "PRAGMA user_version") == [(newest,)]
        assert list((tmp_path / "state" / "backups").glob("*.db")), "no backup before migrating"
        states = _db(db, "SELECT name, state FROM inputs ORDER BY id")
        assert sorted(states) == sorted((f["name"], "delivered") for f in meta["files"])

        for entry in meta["files"]:
            stem = entry["name"].removesuffix(".txt")
            assert read_results(tmp_path, entry["type"], stem) == sandbox.expected_results(
                entry["type"], entry["ids"]), entry["name"]
            assert (tmp_path / "outbox" / entry["type"] / f"{stem}.manifest.json").is_file()
        # exactly once: one results file per input, nothing renamed aside as a second copy
        outputs = sorted(p.name for p in (tmp_path / "outbox").rglob("*.jsonl"))
        assert outputs == sorted(f"{f['name'].removesuffix('.txt')}.jsonl"
                                 for f in meta["files"])
        for path, data in delivered_before.items():
            assert (tmp_path / path).read_bytes() == data, f"{path} was delivered again"
        assert not list((tmp_path / "outbox" / "rejected").iterdir())
        assert not [p for p in (tmp_path / "state" / "spool").iterdir() if p.is_file()]

        names = Counter(job["name"] for job in sandbox.jobs())
        assert names and all(count == 1 for count in names.values()), names
        # 0.1.0's batches go on under their own keys (remote name = key-attempt); a delivering
        # one needs nothing remote; the queued inputs got batches of their own
        keys = Counter(name.rsplit("-", 1)[0] for name in names)
        for key, _, state in meta["at_kill"]["batches"]:
            expected = 0 if state in {"done", "delivering"} else 1
            assert keys[key] == expected, (key, state, names)
