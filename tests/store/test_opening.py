"""`[store] backend` picks the engine the daemon and the commands open."""

from __future__ import annotations

from pathlib import Path

import pytest
from admin_helpers import run_cli
from clocks import FakeClock
from pg_server import PgServer

from orchestrator.config import load_config
from orchestrator.layout import Layout
from orchestrator.store.opening import open_configured_store
from orchestrator.store.postgresql import PostgresStore


async def test_sqlite_is_the_default_and_lives_in_the_state_dir(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[paths]\nstate_dir = "st"\n')
    config = load_config(tmp_path / "config.toml")
    layout = Layout.from_config(config)
    layout.state_dir.mkdir()
    store = await open_configured_store(config, layout, FakeClock())
    try:
        assert not isinstance(store, PostgresStore) and layout.db_path.is_file()
    finally:
        await store.close()


async def test_postgresql_opens_the_dsn_and_no_sqlite_file(tmp_path: Path, pg_dsn: str) -> None:
    (tmp_path / "config.toml").write_text(
        f'[paths]\nstate_dir = "st"\nspool_dir = "sp"\n[store]\nbackend = "postgresql"\n'
        f'dsn = "{pg_dsn}"\n')
    config = load_config(tmp_path / "config.toml")
    layout = Layout.from_config(config)
    store = await open_configured_store(config, layout, FakeClock(), host_id="h1",
                                        environ={})
    try:
        assert isinstance(store, PostgresStore) and store.host_id == "h1"
        assert not layout.db_path.exists()
    finally:
        await store.close()


def test_migrate_brings_an_empty_postgresql_database_up_to_date(
    tmp_path: Path, pg_server: PgServer, capsys: pytest.CaptureFixture[str]
) -> None:
    pg_server.psql("CREATE DATABASE co_cli_migrate")
    config = tmp_path / "config.toml"
    config.write_text(f'[paths]\ninbox = "in"\noutbox = "out"\nstate_dir = "st"\n'
                      f'spool_dir = "sp"\ncreate_missing = true\n[store]\n'
                      f'backend = "postgresql"\ndsn = "{pg_server.dsn("co_cli_migrate")}"\n')
    (tmp_path / "st").mkdir()
    first = run_cli(capsys, "migrate", "--config", config, "--json")
    assert first.code == 0, first.err
    assert [item["version"] for item in first.json["applied"]] == [5, 6]
    again = run_cli(capsys, "migrate", "--config", config, "--json")
    assert again.code == 0 and again.json["status"] == "up to date"
