"""State that holds secrets is private whatever the umask (issue 10, item 11): the state
directory, spool and backups 0700; state.db, its -wal/-shm and the backups 0600. A token file
that its group or everyone can read gets one warning naming the file, never the content. The
outbox keeps the umask's modes (readers of the results depend on them)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from daemon_helpers import drop, load, make_ids, outcome, running_service, wait_for, write_config
from migration_helpers import MIGRATIONS, first, make_dir

from orchestrator.config import Config, load_config
from orchestrator.credentials import warn_if_token_file_readable
from orchestrator.sandbox import Sandbox
from orchestrator.store.migrate import apply_migrations, connect


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("loose_umask")
async def test_daemon_state_is_private_and_the_outbox_follows_the_umask(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    config = load(write_config(tmp_path, sandbox.base_url))
    async with running_service(config):
        drop(tmp_path, "tweets", "a.txt", make_ids(1, 20))
        await wait_for(lambda: outcome(tmp_path, "tweets", "a.txt") == "delivered", what="delivery")
        state = tmp_path / "state"
        for folder in (state, state / "spool", state / "backups"):
            assert mode(folder) == 0o700, folder
        for name in ("state.db", "state.db-wal", "state.db-shm"):
            assert (state / name).exists(), name
            assert mode(state / name) == 0o600, name
    results = tmp_path / "outbox" / "tweets" / "a.jsonl"
    assert mode(results) == 0o644  # the outbox stays as configured (umask here)


@pytest.mark.usefixtures("loose_umask")
async def test_an_older_loose_database_is_tightened_on_open(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    db.touch(mode=0o644)
    conn = await connect(db)
    await conn.close()
    assert mode(db) == 0o600


@pytest.mark.usefixtures("loose_umask")
async def test_migration_backups_are_0600(tmp_path: Path) -> None:
    conn = await connect(tmp_path / "state.db")
    try:
        await apply_migrations(conn, make_dir(tmp_path, first(MIGRATIONS, 1), "v1"))
        await conn.execute("INSERT INTO parents (name) VALUES ('signed-url-holder')")
        backup = tmp_path / "backup.db"
        await apply_migrations(conn, make_dir(tmp_path, MIGRATIONS, "v3"), backup_path=backup)
    finally:
        await conn.close()
    assert backup.exists()
    assert mode(backup) == 0o600


def _config_with_token_file(tmp_path: Path, file_mode: int) -> Config:
    token = tmp_path / "bearer-token"
    token.write_text("secret-token-value-4242\n")
    token.chmod(file_mode)
    path = tmp_path / "config.toml"
    path.write_text(f'[api]\nbearer_token_file = "{token}"\n')
    return load_config(path)


@pytest.mark.parametrize(("file_mode", "who"), [(0o644, "everyone"), (0o640, "its group")])
def test_a_readable_token_file_is_warned_about_once(
    tmp_path: Path, file_mode: int, who: str
) -> None:
    config = _config_with_token_file(tmp_path, file_mode)
    with structlog.testing.capture_logs() as logs:
        assert warn_if_token_file_readable(config, environ={})
    assert len(logs) == 1
    line = logs[0]
    assert line["log_level"] == "warning" and line["event"] == "credentials.token_file_readable"
    assert line["file"] == str(tmp_path / "bearer-token")
    assert line["mode"] == f"{file_mode:04o}" and line["readable_by"] == who
    assert "secret-token-value-4242" not in repr(logs)


def test_a_private_token_file_and_the_environment_give_no_warning(tmp_path: Path) -> None:
    config = _config_with_token_file(tmp_path, 0o600)
    with structlog.testing.capture_logs() as logs:
        assert not warn_if_token_file_readable(config, environ={})
        assert not warn_if_token_file_readable(Config(), environ={"X_BEARER_TOKEN": "abc"})
    assert logs == []
