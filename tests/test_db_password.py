"""[store] dsn and the PostgreSQL password: never in the config file (a DSN carrying one is
refused, naming the key), read like the bearer token, never in an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import StoreConfig, dsn_has_password, load_config
from orchestrator.credentials import load_db_password
from orchestrator.errors import ConfigError

SECRET = "s3cr3t-Pa55"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("dsn", [
    f"host=db dbname=co password={SECRET}",
    f"host=db password = '{SECRET}' dbname=co",
    f"postgresql://co:{SECRET}@db/co",
    f"postgres://db/co?sslmode=require&password={SECRET}",
])
def test_a_dsn_with_a_password_is_refused_naming_the_key_not_the_password(
    tmp_path: Path, dsn: str
) -> None:
    assert dsn_has_password(dsn)
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, f'[store]\nbackend = "postgresql"\ndsn = "{dsn}"\n'))
    message = str(caught.value)
    assert "store.dsn" in message and "password" in message
    assert "db-password" in message  # where it goes instead


@pytest.mark.parametrize("dsn", ["host=db dbname=co user=co sslmode=verify-full",
                                 "postgresql://co@db:5432/co?sslmode=require",
                                 "host=/run/postgresql passfile=/etc/co/pgpass"])
def test_a_dsn_without_a_password_is_accepted(tmp_path: Path, dsn: str) -> None:
    text = f'[paths]\nspool_dir = "spool"\n[store]\nbackend = "postgresql"\ndsn = "{dsn}"\n'
    config = load_config(write(tmp_path, text))
    assert config.store.dsn == dsn and config.store.shared


def test_postgresql_needs_a_dsn(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"store\.dsn"):
        load_config(write(tmp_path, '[store]\nbackend = "postgresql"\n'))


def test_a_password_key_points_to_where_the_password_goes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, f'[store]\npassword = "{SECRET}"\n'))
    assert "database password" in str(caught.value) and SECRET not in str(caught.value)


def test_the_password_comes_from_the_credential_then_the_file_then_pgpassword(
    tmp_path: Path,
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "db-password").write_text("from-systemd\n")
    file = tmp_path / "pw"
    file.write_text("from-file\n")
    store = StoreConfig(backend="postgresql", dsn="host=db", password_file=file)
    env = {"CREDENTIALS_DIRECTORY": str(creds), "PGPASSWORD": "from-env"}
    assert load_db_password(store, env) == "from-systemd"
    assert load_db_password(store, {"PGPASSWORD": "from-env"}) == "from-file"
    assert load_db_password(StoreConfig(), {"PGPASSWORD": "from-env"}) == "from-env"
    assert load_db_password(StoreConfig(), {}) is None  # libpq: ~/.pgpass, peer, certificates


def test_a_bad_password_file_is_named_never_shown(tmp_path: Path) -> None:
    missing = StoreConfig(password_file=tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"store\.password_file"):
        load_db_password(missing, {})
    two_lines = tmp_path / "pw"
    two_lines.write_text(f"{SECRET}\nsecond\n")
    with pytest.raises(ConfigError) as caught:
        load_db_password(StoreConfig(password_file=two_lines), {})
    assert SECRET not in str(caught.value)
