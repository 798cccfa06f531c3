"""The reports' PostgreSQL reader (store/pg_reports.py): one read-only snapshot per command,
named in pg_stat_activity, and a clear line when the server is not there."""

from __future__ import annotations

from pathlib import Path

import pytest
from pg_server import PgServer

from orchestrator.store.pg_reports import APPLICATION_NAME, open_pg_reader
from orchestrator.store.postgresql import StoreUnavailable


def test_one_read_only_snapshot_for_the_whole_report(pg_server: PgServer, pg_dsn: str) -> None:
    """Every query of one report sees the same state, even when a daemon commits meanwhile;
    the server refuses writes; the connection says who it is."""
    dbname = pg_dsn.rsplit("dbname=", 1)[1]
    with open_pg_reader(pg_dsn, None) as reader:
        assert reader.rows("SHOW transaction_read_only")[0]["transaction_read_only"] == "on"
        before = reader.rows("SELECT COUNT(*) AS n FROM settings")[0]["n"]
        pg_server.psql("INSERT INTO settings (key, value_json, updated_at)"
                       " VALUES ('probe', '{}', 'now')", dbname)
        assert reader.rows("SELECT COUNT(*) AS n FROM settings")[0]["n"] == before
        names = pg_server.psql("SELECT application_name FROM pg_stat_activity"
                               " WHERE datname = current_database()", dbname)
        assert APPLICATION_NAME in names.split()
        assert reader.has_table("batches") and not reader.has_table("no_such_table")
    with open_pg_reader(pg_dsn, None) as reader:  # the next command sees the commit
        assert reader.rows("SELECT COUNT(*) AS n FROM settings")[0]["n"] == before + 1


def test_an_unreachable_server_is_one_line_naming_it_without_the_password(
    tmp_path: Path
) -> None:
    with (pytest.raises(StoreUnavailable) as caught,
          open_pg_reader(f"host={tmp_path} port=5432 dbname=nowhere user=co",
                         "pw-hunter2-secret")):
        pass
    message = caught.value.message
    assert message.startswith(f"cannot connect to PostgreSQL (host={tmp_path} port=5432"
                              " dbname=nowhere user=co): ")
    assert "\n" not in message and "hunter2" not in message
