"""Config loading, validation, the bearer token sources and `check-config`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import tomllib
from pathlib import Path

import pytest

from orchestrator.cli.check_config import check_config_command
from orchestrator.config import (
    Config,
    ConfigError,
    HealthConfig,
    load_config,
)
from orchestrator.credentials import load_bearer_token

REPO = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
EXAMPLE = REPO / "config.example.toml"
TOKEN = "AAAAAAAAAAAAAAAAAAAAAMLheAAAAAAA0%2BuSeid%2BULvsea4JtiGRiSDSJSI%3DEUifiRBkKG5E2"


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message  # every error names the file
    return message


# --- defaults and the example file ------------------------------------------------------------


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    config = load_config(path)
    assert config == Config(source=path)
    assert config.api.base_url == "https://api.x.com"
    assert config.jobs.concurrency == "global"
    assert config.jobs.upload_chunk_bytes == 8388608
    assert config.paths.state_dir == Path("/var/lib/compliance-orchestrator")
    assert config.api.bearer_token_file is None


def test_example_config_loads_and_equals_the_defaults() -> None:
    assert load_config(EXAMPLE) == Config(source=EXAMPLE)


def test_example_config_shows_every_key() -> None:
    with open(EXAMPLE, "rb") as f:
        example = tomllib.load(f)
    defaults = Config()
    expected = {
        field.name: {f.name for f in dataclasses.fields(getattr(defaults, field.name))}
        for field in dataclasses.fields(Config)
        if field.name != "source"
    }
    assert {section: set(keys) for section, keys in example.items()} == expected


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.jobs.max_attempts = 1  # type: ignore[misc]


def test_values_are_read(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
            [api]
            base_url = "http://127.0.0.1:8080/"
            read_timeout_s = 30
            [inbox]
            min_age_s = 0
            invalid_lines = "drop"
            use_watcher = false
            [jobs]
            concurrency = "per-type"
            upload_chunk_bytes = 524288
            [log]
            level = "debug"
            format = "json"
            [health]
            enabled = true
            host = "::1"
            port = 0
            """,
        )
    )
    assert config.api.base_url == "http://127.0.0.1:8080"  # trailing slash dropped
    assert config.api.read_timeout_s == 30.0
    assert isinstance(config.api.read_timeout_s, float)  # TOML int accepted for a float
    assert config.inbox.min_age_s == 0.0
    assert config.inbox.invalid_lines == "drop"
    assert config.inbox.use_watcher is False
    assert config.jobs.concurrency == "per-type"
    assert config.jobs.upload_chunk_bytes == 524288
    assert (config.log.level, config.log.format) == ("debug", "json")
    assert config.health == HealthConfig(enabled=True, host="::1", port=0)


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    path = write(
        folder,
        """
        [api]
        bearer_token_file = "secrets/token"
        [paths]
        inbox = "../data/inbox"
        outbox = "out"
        state_dir = "/abs/state"
        """,
    )
    config = load_config(path)
    assert config.paths.inbox == tmp_path / "data" / "inbox"
    assert config.paths.outbox == folder / "out"
    assert config.paths.state_dir == Path("/abs/state")
    assert config.api.bearer_token_file == folder / "secrets" / "token"


def test_for_logging_is_plain_json(tmp_path: Path) -> None:
    path = write(tmp_path, '[paths]\ninbox = "in"\n')
    data = load_config(path).for_logging()
    assert json.loads(json.dumps(data)) == data
    assert data["paths"]["inbox"] == str(tmp_path / "in")
    assert data["jobs"]["max_attempts"] == 5
    assert set(data) == {"api", "paths", "inbox", "jobs", "poll", "log", "health", "service",
                         "source"}


# --- errors ------------------------------------------------------------------------------------


def test_unknown_key_names_the_dotted_key_and_suggests(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[jobs]\nmax_atempts = 3\n")
    assert "unknown key jobs.max_atempts" in message
    assert "did you mean max_attempts?" in message


def test_unknown_section_is_rejected(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[polling]\ninitial_interval_s = 3\n")
    assert "unknown section polling" in message
    assert "did you mean poll?" in message


def test_section_must_be_a_table(tmp_path: Path) -> None:
    message = config_error(tmp_path, "api = 5\n")
    assert "api = 5" in message
    assert "[api] table" in message


@pytest.mark.parametrize(
    ("toml", "fragments"),
    [
        ("[jobs]\nupload_chunk_bytes = 1000", ["jobs.upload_chunk_bytes = 1000", "262144"]),
        ("[jobs]\nupload_chunk_bytes = 0", ["jobs.upload_chunk_bytes = 0", "positive multiple"]),
        ("[jobs]\nmax_attempts = 0", ["jobs.max_attempts = 0", "integer >= 1"]),
        ("[jobs]\nmax_attempts = 2.5", ["jobs.max_attempts = 2.5", "an integer"]),
        ('[jobs]\nconcurrency = "parallel"', ['"parallel"', '"global", "per-type"']),
        ("[jobs]\nupload_margin_s = 900", ["jobs.upload_margin_s = 900", "upload window"]),
        ('[inbox]\ninvalid_lines = "skip"', ['inbox.invalid_lines = "skip"', '"reject"']),
        ('[inbox]\nuse_watcher = "yes"', ['inbox.use_watcher = "yes"', "true or false"]),
        ("[inbox]\nmin_age_s = -1", ["inbox.min_age_s = -1", ">= 0"]),
        ("[api]\nconnect_timeout_s = true", ["api.connect_timeout_s = true", "number"]),
        ("[api]\nread_timeout_s = inf", ["api.read_timeout_s = inf", "finite number"]),
        ("[api]\nread_timeout_s = 0", ["api.read_timeout_s = 0", "greater than 0"]),
        ('[api]\nbase_url = "ftp://x.example"', ['"ftp://x.example"', "http(s) URL"]),
        ('[api]\nbase_url = "https://u:p@x.example"', ["api.base_url", "user info"]),
        ('[api]\nbase_url = "https://x.example/?a=1"', ["api.base_url", "query"]),
        ("[poll]\nbackoff_factor = 0.5", ["poll.backoff_factor = 0.5", ">= 1"]),
        ("[poll]\nrate_reserve = 150", ["poll.rate_reserve = 150", "0 to 149"]),
        ('[log]\nlevel = "verbose"', ['log.level = "verbose"', '"debug", "info"']),
        ('[log]\nformat = "text"', ['log.format = "text"', '"json", "console", "auto"']),
        ('[health]\nhost = "0.0.0.0"', ['health.host = "0.0.0.0"', "loopback"]),
        ("[health]\nport = 70000", ["health.port = 70000", "65535"]),
        ("[paths]\ninbox = 3", ["paths.inbox = 3", "path"]),
        ('[paths]\ninbox = ""', ['paths.inbox = ""', "non-empty path"]),
        ('[paths]\ninbox = ["a"]', ["paths.inbox = an array", "path"]),
    ],
)
def test_bad_values_name_key_value_and_what_is_allowed(
    tmp_path: Path, toml: str, fragments: list[str]
) -> None:
    message = config_error(tmp_path, toml + "\n")
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("toml", "fragments"),
    [
        (
            "[jobs]\nbackoff_initial_s = 500.0\n",
            ["jobs.backoff_initial_s = 500.0", "at most jobs.backoff_max_s"],
        ),
        (
            "[poll]\ninitial_interval_s = 90\n",
            ["poll.initial_interval_s = 90.0", "at most poll.max_interval_s"],
        ),
        ('[paths]\ninbox = "/srv/x"\noutbox = "/srv/x"\n', ["paths.inbox", "paths.outbox"]),
        ('[paths]\ninbox = "/srv/x"\noutbox = "/srv/x/out"\n', ["neither inside the other"]),
        (
            '[paths]\ninbox = "/srv/in"\nstate_dir = "/srv/in/state"\n',
            ["paths.state_dir", "inside paths.inbox"],
        ),
        (
            '[paths]\noutbox = "/srv/out"\nstate_dir = "/srv/out"\n',
            ["paths.state_dir", "inside paths.outbox"],
        ),
    ],
)
def test_inconsistent_settings_are_rejected(
    tmp_path: Path, toml: str, fragments: list[str]
) -> None:
    message = config_error(tmp_path, toml)
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    "toml",
    [
        '[api]\nbearer_token = "SEKRET-VALUE-123"\n',
        'bearer_token = "SEKRET-VALUE-123"\n',
        '[api]\napi_key = "SEKRET-VALUE-123"\n',
    ],
)
def test_a_token_in_the_config_file_is_refused_with_where_to_put_it(
    tmp_path: Path, toml: str
) -> None:
    message = config_error(tmp_path, toml)
    assert "SEKRET-VALUE-123" not in message
    assert "$CREDENTIALS_DIRECTORY/bearer-token" in message
    assert "api.bearer_token_file" in message
    assert "X_BEARER_TOKEN" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file not found: .*nope\.toml"):
        load_config(tmp_path / "nope.toml")


def test_toml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    message = config_error(tmp_path, '[api]\nbase_url = "https://x\n')
    assert "invalid TOML" in message
    assert "line 2" in message


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'[log]\nlevel = "\xff"\n')
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(path)


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


# --- check-config ------------------------------------------------------------------------------


def test_check_config_ok_prints_a_summary_without_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setenv("X_BEARER_TOKEN", TOKEN)
    path = write(tmp_path, '[api]\nbase_url = "http://127.0.0.1:9999"\n[paths]\ninbox = "in"\n')
    assert check_config_command(argparse.Namespace(config=path)) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"config OK: {path}\n")
    assert str(tmp_path / "in") in out
    assert "http://127.0.0.1:9999" in out
    assert "environment variable X_BEARER_TOKEN" in out
    assert TOKEN not in out + err


def test_check_config_bad_config_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "[jobs]\nmax_attempts = -1\n")
    assert check_config_command(argparse.Namespace(config=path)) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "jobs.max_attempts = -1" in err


def test_check_config_without_a_token_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.delenv("X_BEARER_TOKEN", raising=False)
    assert check_config_command(argparse.Namespace(config=write(tmp_path, ""))) == 2
    assert "no bearer token found" in capsys.readouterr().err
