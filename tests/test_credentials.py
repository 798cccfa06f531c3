"""The bearer token sources (credentials.py): their order, and errors that name the source."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import Config, ConfigError, load_config
from orchestrator.credentials import load_bearer_token

TOKEN = "AAAAAAAAAAAAAAAAAAAAAMLheAAAAAAA0%2BuSeid%2BULvsea4JtiGRiSDSJSI%3DEUifiRBkKG5E2"


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- bearer token ------------------------------------------------------------------------------


@pytest.fixture
def cred_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "credentials"
    folder.mkdir()
    return folder


def config_with_token_file(tmp_path: Path, token_file: Path | None) -> Config:
    text = f'[api]\nbearer_token_file = "{token_file}"\n' if token_file else ""
    return load_config(write(tmp_path, text))


def test_token_sources_in_order(tmp_path: Path, cred_dir: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    (cred_dir / "bearer-token").write_text("  from-credentials \n")
    config = config_with_token_file(tmp_path, token_file)
    env = {"CREDENTIALS_DIRECTORY": str(cred_dir), "X_BEARER_TOKEN": "from-env"}

    assert load_bearer_token(config, env) == "from-credentials"
    (cred_dir / "bearer-token").unlink()  # systemd sets the directory for any credential
    assert load_bearer_token(config, env) == "from-file"
    assert load_bearer_token(config_with_token_file(tmp_path, None), env) == "from-env"


def test_no_token_anywhere_lists_the_three_places(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_bearer_token(config_with_token_file(tmp_path, None), {})
    message = str(info.value)
    for place in ("$CREDENTIALS_DIRECTORY/bearer-token", "api.bearer_token_file", "X_BEARER_TOKEN"):
        assert place in message


def test_empty_credential_is_an_error_naming_it(tmp_path: Path, cred_dir: Path) -> None:
    (cred_dir / "bearer-token").write_text(" \n")
    env = {"CREDENTIALS_DIRECTORY": str(cred_dir), "X_BEARER_TOKEN": TOKEN}
    with pytest.raises(ConfigError, match=r"CREDENTIALS_DIRECTORY/bearer-token .* is empty"):
        load_bearer_token(config_with_token_file(tmp_path, None), env)


def test_unreadable_token_file_is_an_error_naming_it(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.mkdir()  # exists but cannot be read as a file, even by root
    with pytest.raises(ConfigError, match=r"cannot read the bearer token from api.bearer_token"):
        load_bearer_token(config_with_token_file(tmp_path, token_file), {"X_BEARER_TOKEN": TOKEN})


def test_configured_token_file_that_is_missing_is_an_error(tmp_path: Path) -> None:
    token_file = tmp_path / "missing-token"
    config = config_with_token_file(tmp_path, token_file)
    with pytest.raises(ConfigError, match=r"api.bearer_token_file .*missing-token.* not exist"):
        load_bearer_token(config, {"X_BEARER_TOKEN": TOKEN})


def test_empty_environment_variable_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="X_BEARER_TOKEN is empty"):
        load_bearer_token(config_with_token_file(tmp_path, None), {"X_BEARER_TOKEN": ""})


def test_token_with_a_second_line_is_refused_without_echoing_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_bearer_token(
            config_with_token_file(tmp_path, None), {"X_BEARER_TOKEN": f"{TOKEN}\nextra"}
        )
    assert "line breaks" in str(info.value)
    assert TOKEN not in str(info.value)
    assert "extra" not in str(info.value)
