"""Config loading and validation: defaults, the example file, errors that name the key."""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from pathlib import Path

import pytest

from orchestrator.config import (
    Config,
    ConfigError,
    HealthConfig,
    default_host_id,
    load_config,
)
from orchestrator.core.packing import PackTiming
from orchestrator.daemon.settings import packing_of

REPO = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
EXAMPLE = REPO / "config.example.toml"


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
        if field.name not in ("source", "hooks", "webhooks")  # arrays: commented out, below
    }
    assert {section: set(keys) for section, keys in example.items()} == expected


def test_bursts_wait_a_quiet_second_bounded_by_a_minute_by_default(tmp_path: Path) -> None:
    jobs = load_config(write(tmp_path, "")).jobs
    assert (jobs.pack_quiet_s, jobs.pack_wait_s) == (1.0, 60.0)


@pytest.mark.parametrize(
    ("toml", "quiet", "wait"),
    [
        ("pack_quiet_s = 0.2\npack_wait_s = 5", 0.2, 5.0),
        ("pack_quiet_s = 0", 0.0, 60.0),
        # The old way to submit at once still loads: the wait bounds the quiet period to 0.
        ("pack_wait_s = 0", 0.0, 0.0),
        # A quiet period longer than the wait is a fixed wait for company (the wait bounds it).
        ("pack_quiet_s = 30\npack_wait_s = 10", 10.0, 10.0),
    ],
)
def test_pack_timing_is_read_and_the_wait_bounds_the_quiet_period(
    tmp_path: Path, toml: str, quiet: float, wait: float
) -> None:
    limits = packing_of(load_config(write(tmp_path, f"[jobs]\n{toml}\n")))
    timing = PackTiming(quiet_s=limits.pack_quiet_s, wait_s=limits.pack_wait_s)
    assert (timing.effective_quiet_s, timing.wait_s) == (quiet, wait)


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
                         "retention", "outputs", "store", "hooks", "webhooks",
                         "source"}


def test_host_id_defaults_to_the_hostname_and_must_be_a_safe_name(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")).service.host == default_host_id()
    config = load_config(write(tmp_path, '[service]\nhost_id = "node-b.dc1"\n'))
    assert config.service.host == "node-b.dc1"
    for bad in ('"../x"', '"a b"', '"-a"', '"' + "a" * 64 + '"'):
        with pytest.raises(ConfigError, match=r"service\.host_id"):
            load_config(write(tmp_path, f"[service]\nhost_id = {bad}\n"))
    assert default_host_id() and "/" not in default_host_id()


def test_the_store_lease_renews_every_third_of_its_ttl(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[store]\nlease_ttl_s = 12\n'))
    assert (config.store.lease_ttl_s, config.store.renew_interval_s) == (12.0, 4.0)
    assert not config.store.shared
    with pytest.raises(ConfigError, match=r"store\.lease_ttl_s"):
        load_config(write(tmp_path, '[store]\nlease_ttl_s = 1\n'))


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
        ("[jobs]\npack_quiet_s = -1", ["jobs.pack_quiet_s = -1", ">= 0"]),
        ("[jobs]\npack_wait_s = -0.5", ["jobs.pack_wait_s = -0.5", ">= 0"]),
        ('[jobs]\npack_quiet_s = "2s"', ['jobs.pack_quiet_s = "2s"', "number"]),
        ("[jobs]\npack_wait_s = inf", ["jobs.pack_wait_s = inf", "finite number"]),
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
        (  # the inbox scan would report the spool's files as stray entries
            '[paths]\ninbox = "/srv/in"\nspool_dir = "/srv/in/spool"\n',
            ["paths.spool_dir", "inside paths.inbox", "beside it"],
        ),
        (
            '[paths]\ninbox = "/in"\noutbox = "/srv/out"\nspool_dir = "/srv"\n',
            ["paths.spool_dir", "paths.outbox", "nor contain it"],
        ),
        ("[inbox]\nmax_input_bytes = 0\n", ["inbox.max_input_bytes = 0", "an integer >= 1"]),
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


# --- [[hooks]] and [[webhooks]] -----------------------------------------------------------------


def test_the_example_hook_entries_load_once_uncommented(tmp_path: Path) -> None:
    lines = EXAMPLE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# [[hooks]]"))
    entries = "\n".join(line[2:] for line in lines[start:]
                         if re.match(r"# (\[\[\w+\]\]$|\w+ = )", line))
    (tmp_path / "webhook.secret").write_text("s")
    config = load_config(write(tmp_path, entries))
    assert [h.on for h in config.hooks] and [w.on for w in config.webhooks]
    hook = config.hooks[0]
    assert hook.command and all(isinstance(part, str) for part in hook.command)
    assert {field.name for field in dataclasses.fields(hook)} <= set(entries.replace("=", " ")
                                                                     .split())


def test_hook_entries_are_validated_naming_the_key_and_index(tmp_path: Path) -> None:
    ok = '[[hooks]]\non = "delivered"\ncommand = ["/bin/true"]\n'
    config = load_config(write(tmp_path, ok + '[[hooks]]\non = "paused"\ncommand = ["x"]\n'
                                              'job_type = "users"\ntimeout_s = 2\n'))
    assert config.hooks[1].on == "paused" and config.hooks[1].timeout_s == 2.0
    assert config.hooks[0].command == ("/bin/true",)
    assert "hooks[1].on" in config_error(tmp_path, ok + '[[hooks]]\non = "done"\ncommand = ["x"]')
    assert "hooks[0].command is missing" in config_error(tmp_path, '[[hooks]]\non = "paused"')
    assert "hooks[0].command" in config_error(tmp_path, '[[hooks]]\non = "paused"\ncommand = "x"')
    assert "hooks[0].command" in config_error(tmp_path, '[[hooks]]\non = "paused"\ncommand = []')
    assert "hooks[0].job_type" in config_error(tmp_path, ok + 'job_type = "posts"')
    assert "hooks[0].max_attempts" in config_error(tmp_path, ok + "max_attempts = 0")
    assert "unknown key hooks[0].shell" in config_error(tmp_path, ok + "shell = true")
    assert "expected [[hooks]] entries" in config_error(tmp_path, 'hooks = "x"')


def test_webhook_urls_and_secrets_are_checked(tmp_path: Path) -> None:
    base = '[[webhooks]]\non = "rejected"\nsecret_file = "s"\n'
    config = load_config(write(tmp_path, base + 'url = "https://example.org/hook"'))
    assert config.webhooks[0].secret_file == tmp_path / "s"
    assert load_config(write(tmp_path, base + 'url = "http://127.0.0.1:8080/h"')).webhooks
    assert "webhooks[0].url" in config_error(tmp_path, base + 'url = "http://example.org/h"')
    assert "webhooks[0].url" in config_error(tmp_path, base + 'url = "https://a/h?k=secret"')
    assert "webhooks[0].url is missing" in config_error(tmp_path, base)
    both = '[[webhooks]]\nurl = "https://e.org/"\non = "paused"\n'
    assert "exactly one of secret_file" in config_error(tmp_path, both)
    assert "exactly one of secret_file" in config_error(
        tmp_path, both + 'secret_file = "s"\nsecret_credential = "c"')
    assert "secret_credential" in config_error(tmp_path, both + 'secret_credential = "../x"')
    assert load_config(write(tmp_path, both + 'secret_credential = "hook-secret"')).webhooks
