"""The PostgreSQL engine's own parts: the connection adapter, the server's clock for the
lease, errors without the password, the `backup` advice."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from admin_helpers import run_cli
from clocks import FakeClock

from orchestrator.errors import ConfigError
from orchestrator.store.postgresql import PgRow, PostgresStore, connect_pg, translate

SECRET = "s3cr3t-Pa55"


def test_rows_read_like_sqlite_rows() -> None:
    row = PgRow(("id", "state"), (7, "queued"))
    assert (row[0], row["state"], row.keys(), dict(zip(row.keys(), row, strict=True))) == (
        7, "queued", ["id", "state"], {"id": 7, "state": "queued"})
    with pytest.raises(IndexError):
        row["nope"]


def test_placeholders_are_translated_and_percent_signs_kept() -> None:
    assert translate("SELECT ? WHERE x LIKE 'a%'") == "SELECT %s WHERE x LIKE 'a%%'"


async def test_the_lease_runs_on_the_servers_clock(pg_dsn: str) -> None:
    clock = FakeClock()  # far from the server's time: it must not matter
    clock.advance(-400 * 86400)
    store = await PostgresStore.open_pg(pg_dsn, clock, host_id="a")
    try:
        before = await store.lease_now()
        epoch = await store.acquire_lease("a", 30.0)
        view = await store.cluster_view()
        assert epoch == 1 and view.leader == "a"
        assert view.acquired_at is not None and view.acquired_at >= before
        assert view.expires_at == view.acquired_at + timedelta(seconds=30)
        assert abs((view.db_now - before).total_seconds()) < 3600
        assert await store.acquire_lease("b", 30.0) is None
    finally:
        await store.close()


async def test_a_failed_connection_never_shows_the_password(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        await connect_pg(f"host={tmp_path} dbname=none connect_timeout=2", SECRET)
    assert "cannot connect to PostgreSQL" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_backup_on_postgresql_points_to_pg_dump(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[paths]\ninbox = "in"\noutbox = "out"\nstate_dir = "st"\n'
                      f'spool_dir = "sp"\n[store]\nbackend = "postgresql"\n'
                      f'dsn = "host={tmp_path} dbname=x"\n')
    result = run_cli(capsys, "backup", "--config", config, "--to", tmp_path / "b")
    assert result.code == 2 and "pg_dump" in result.err
