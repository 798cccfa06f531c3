"""Configuration: one TOML file read into frozen dataclasses and validated before anything runs.

Every key is optional (the defaults are in the dataclasses below and in config.example.toml).
A misspelt key is an error rather than silently ignored, so that a typo never leaves a
production daemon on a default the operator thought they had changed. The bearer token is never
in this file: see orchestrator/credentials.py.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
import socket
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from orchestrator.core.limits import (
    DEFAULT_RATE_RESERVE,
    RATE_LIMIT_REQUESTS,
    RATE_WINDOW_S,
    UPLOAD_WINDOW_S,
)
from orchestrator.credentials import WHERE_THE_DB_PASSWORD_GOES, WHERE_THE_TOKEN_GOES
from orchestrator.errors import ConfigError

UPLOAD_CHUNK_GRANULE = 256 * 1024  # resumable uploads take chunks in multiples of 256 KiB
# Unknown keys that look like they hold a credential get a "where to put it" answer instead.
_SECRET_LIKE_KEY = re.compile(
    r"token|secret|password|passwd|credential|bearer|authorization|api_?key", re.IGNORECASE
)


def _rule(ok: Callable[[Any], bool], allowed: str) -> dict[str, Any]:
    """Field metadata: a predicate on the converted value and how to describe valid values."""
    return {"ok": ok, "allowed": allowed}


def _http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and not parts.username  # credentials in a URL would end up in logs
        and not parts.query
        and not parts.fragment
    )


def _loopback(value: str) -> bool:
    if value.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(value).is_loopback
    except ValueError:
        return False


def is_secure_url(value: str) -> bool:
    """https, or plain http to this machine only (127.0.0.0/8, ::1, localhost: a test server
    or a local emulator). Anything else would send the bearer token or a signed URL in clear."""
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        return False
    if parts.scheme.lower() == "https":
        return bool(host)
    return parts.scheme.lower() == "http" and host is not None and _loopback(host)


def _api_url(value: str) -> bool:
    return _http_url(value) and is_secure_url(value)


_POSITIVE = _rule(lambda v: v > 0, "a number greater than 0")
_NON_NEGATIVE = _rule(lambda v: v >= 0, "a number >= 0")
_AT_LEAST_ONE = _rule(lambda v: v >= 1, "an integer >= 1")


@dataclass(frozen=True, slots=True)
class ApiConfig:
    base_url: str = field(
        default="https://api.x.com",
        metadata=_rule(
            _api_url,
            "an http(s) URL with a host and no user info, query or #; https unless the host "
            "is 127.0.0.1, ::1 or localhost (over http the bearer token travels in clear)",
        ),
    )
    connect_timeout_s: float = field(default=10.0, metadata=_POSITIVE)
    # Per socket read. There is deliberately no total timeout: it would kill large transfers.
    read_timeout_s: float = field(default=60.0, metadata=_POSITIVE)
    bearer_token_file: Path | None = None


@dataclass(frozen=True, slots=True)
class PathsConfig:
    inbox: Path = Path("/srv/compliance/inbox")
    outbox: Path = Path("/srv/compliance/outbox")
    state_dir: Path = Path("/var/lib/compliance-orchestrator")
    # Claimed inputs and work files. Put it on the inbox's filesystem (beside the inbox, not
    # in it) so that a claim is a rename, not a copy. Unset: <state_dir>/spool.
    spool_dir: Path | None = None
    # Make missing folders (their parent must be writable). Off: a missing folder is an error
    # at start-up and in check-config, so a misspelt path is not silently created.
    create_missing: bool = False


@dataclass(frozen=True, slots=True)
class InboxConfig:
    min_age_s: float = field(default=2.0, metadata=_NON_NEGATIVE)
    rescan_interval_s: float = field(default=5.0, metadata=_POSITIVE)
    use_watcher: bool = True
    invalid_lines: Literal["reject", "drop"] = "reject"
    # What the files in inbox/tweets and inbox/users hold: "auto" (by content: `{` opens JSON
    # Lines, a header naming an ID column is CSV/TSV, else one ID per line), or fixed.
    tweets_format: Literal["auto", "ids", "jsonl", "csv"] = "auto"
    users_format: Literal["auto", "ids", "jsonl", "csv"] = "auto"
    # A CSV column to take IDs from, tried before `id`, `tweet_id` and `user_id`.
    id_column: str = ""
    duplicate_content: Literal["process", "link"] = "process"
    link_max_age_s: float = field(default=86400.0, metadata=_NON_NEGATIVE)
    # A bigger file is rejected (`too_large`) without being copied anywhere.
    max_input_bytes: int = field(default=4 << 30, metadata=_AT_LEAST_ONE)
    # Free space every copy (a claim across filesystems, a rejection) must leave behind.
    min_free_bytes: int = field(default=64 << 20, metadata=_rule(lambda v: v >= 0,
                                                                  "an integer >= 0"))
    # A `.part` left this long gets one warning (a producer died before its rename). 0: off.
    stale_part_warn_s: float = field(default=86400.0, metadata=_NON_NEGATIVE)


@dataclass(frozen=True, slots=True)
class JobsConfig:
    concurrency: Literal["global", "per-type"] = "global"
    upload_margin_s: float = field(
        default=60.0,
        metadata=_rule(lambda v: 0 <= v < UPLOAD_WINDOW_S,
                       f"a number >= 0 and below the {UPLOAD_WINDOW_S:.0f} s upload window"),
    )
    download_margin_s: float = field(
        default=3600.0,
        metadata=_rule(
            lambda v: 0 <= v < 604800, "a number >= 0 and below the 7-day download window"
        ),
    )
    download_warn_lead_s: float = field(default=86400.0, metadata=_NON_NEGATIVE)
    # Remote jobs per batch; only jobs lost to a permanent answer (a 4xx, a failed or expired
    # job, a window X says is closed) can use the last one up and reject the inputs.
    max_attempts: int = field(default=5, metadata=_AT_LEAST_ONE)
    # Consecutive transient failures (5xx, resets, timeouts) of one stage after which the retry
    # is logged as an error (an incident). Transient failures never give up (core.retry).
    max_stage_retries: int = field(default=10, metadata=_rule(lambda v: v >= 0, "an integer >= 0"))
    backoff_initial_s: float = field(default=2.0, metadata=_POSITIVE)
    backoff_max_s: float = field(default=300.0, metadata=_POSITIVE)
    resumable_threshold_bytes: int = field(
        default=64 * 1024 * 1024, metadata=_rule(lambda v: v >= 0, "an integer >= 0")
    )
    upload_chunk_bytes: int = field(
        default=8 * 1024 * 1024,
        metadata=_rule(
            lambda v: v > 0 and v % UPLOAD_CHUNK_GRANULE == 0,
            f"a positive multiple of {UPLOAD_CHUNK_GRANULE} (256 KiB)",
        ),
    )
    max_ids_per_job: int = field(default=100_000_000, metadata=_AT_LEAST_ONE)
    max_bytes_per_job: int = field(
        default=2_000_000_000, metadata=_rule(lambda v: v >= 64, "an integer >= 64")
    )
    pack_files: bool = True
    # A pack with room left waits until no file of its type was queued for pack_quiet_s (and
    # no claim pass is in progress), but never longer than pack_wait_s after its oldest file
    # was queued (core/packing.py): a burst becomes one job, a trickle cannot stall it.
    pack_quiet_s: float = field(default=1.0, metadata=_NON_NEGATIVE)
    pack_wait_s: float = field(default=60.0, metadata=_NON_NEGATIVE)


@dataclass(frozen=True, slots=True)
class PollConfig:
    initial_interval_s: float = field(default=5.0, metadata=_POSITIVE)
    max_interval_s: float = field(default=60.0, metadata=_POSITIVE)
    backoff_factor: float = field(default=1.5, metadata=_rule(lambda v: v >= 1, "a number >= 1"))
    # Requests of each rate window left for other clients of the same app.
    rate_reserve: int = field(
        default=DEFAULT_RATE_RESERVE,
        metadata=_rule(lambda v: 0 <= v < RATE_LIMIT_REQUESTS,
                       f"an integer from 0 to {RATE_LIMIT_REQUESTS - 1}"),
    )
    # X's rate-limit window (15 minutes). Only an emulator running on a scaled clock (the
    # bench's time-scaled rows) has another: the static poll spacing is derived from it.
    rate_window_s: float = field(default=RATE_WINDOW_S, metadata=_POSITIVE)


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console", "auto"] = "auto"


@dataclass(frozen=True, slots=True)
class HealthConfig:
    enabled: bool = False
    host: str = field(
        default="127.0.0.1",
        metadata=_rule(_loopback, "a loopback address such as 127.0.0.1, ::1 or localhost"),
    )
    port: int = field(
        default=9464,
        metadata=_rule(lambda v: 0 <= v <= 65535, "an integer from 0 (any free port) to 65535"),
    )
    # /healthz answers 503 once X has been unreachable, or the outbox or spool unwritable,
    # for this long (a blip of a few failed requests is not worth waking anyone).
    unhealthy_after_s: float = field(default=300.0, metadata=_NON_NEGATIVE)


_HOST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def default_host_id() -> str:
    """This machine's hostname, made a safe host_id (other characters become `-`)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).lstrip("._-")[:63]
    return name or "host"


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    stop_grace_s: float = field(
        default=20.0,
        metadata=_rule(lambda v: 0 <= v <= 600, "a number of seconds from 0 to 600"),
    )
    stale_after_s: float = field(
        default=0.0,
        metadata=_rule(lambda v: v == 0 or v >= 10, "0 (automatic) or at least 10 seconds"),
    )
    # Names this daemon in events, `status`, and the User-Agent of its requests. Unique per
    # host of a cluster sharing one store (issue 12). "": the hostname.
    host_id: str = field(
        default="",
        metadata=_rule(lambda v: v == "" or _HOST_ID.fullmatch(v) is not None,
                       '"" (the hostname) or 1-63 letters, digits, ".", "_" or "-", starting '
                       "with a letter or digit"),
    )

    @property
    def host(self) -> str:
        """The host_id in effect: the configured one, else the hostname."""
        return self.host_id or default_host_id()


def dsn_has_password(dsn: str) -> bool:
    """A libpq URI with `user:password@` or `?password=`, or a key=value string with a
    `password` key (a conservative check: we never want it in the config file)."""
    if re.match(r"postgres(?:ql)?://", dsn, re.IGNORECASE):
        try:
            parts = urlsplit(dsn)
        except ValueError:
            return True  # unparsable: refuse rather than risk printing it
        return parts.password is not None or re.search(r"(?:^|&)password=", parts.query,
                                                       re.IGNORECASE) is not None
    return re.search(r"(?:^|\s)password\s*=", dsn, re.IGNORECASE) is not None


@dataclass(frozen=True, slots=True)
class StoreConfig:
    # sqlite: the embedded state.db, one host. postgresql: several hosts share one database.
    backend: Literal["sqlite", "postgresql"] = "sqlite"
    # The leader lease: a leader that has not renewed it for this long is replaced by a
    # standby. It renews every third of it, and stops acting on X before it runs out.
    lease_ttl_s: float = field(
        default=30.0,
        metadata=_rule(lambda v: 6 <= v <= 600, "a number of seconds from 6 to 600"),
    )

    # PostgreSQL: a libpq connection string or URI, WITHOUT the password (that is read like
    # the bearer token: see credentials.load_db_password). Unused with sqlite.
    dsn: str = field(
        default="",
        metadata=_rule(lambda v: not dsn_has_password(v),
                       "a connection string without a password (put the password in "
                       f"{WHERE_THE_DB_PASSWORD_GOES})"),
    )
    password_file: Path | None = None

    @property
    def renew_interval_s(self) -> float:
        return self.lease_ttl_s / 3

    @property
    def shared(self) -> bool:
        """Several hosts may share this store (leases are enforced, hosts fenced)."""
        return self.backend != "sqlite"


@dataclass(frozen=True, slots=True)
class OutputsConfig:
    # For a JSON Lines input, also write <stem>.compliant.jsonl: the input minus the objects
    # X says to delete, with `geo` removed where the reason is scrub_geo.
    compliant_copy: bool = False


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    # Event rows (the per-file history) older than this are deleted, once their input and
    # batch are final; about 15 rows per file. 0: keep forever.
    events_days: float = field(default=90.0, metadata=_NON_NEGATIVE)
    # Input rows (a file's line in `jobs`) older than this, counted from when the file was
    # delivered or rejected, are deleted with their batch rows and hook runs; never a file
    # still queued or in flight. 0: keep forever.
    inputs_days: float = field(default=365.0, metadata=_NON_NEGATIVE)
    # Delivered results in the outbox (<stem>.jsonl, .manifest.json, .delta.jsonl,
    # .compliant.jsonl) whose manifest is older than this are deleted. Never rejected/.
    # 0 (the default): keep forever.
    outbox_days: float = field(default=0.0, metadata=_NON_NEGATIVE)


HOOK_EVENTS = ("delivered", "rejected", "paused")
_JOB_TYPE_FILTER = _rule(lambda v: v in ("", "tweets", "users"),
                         '"tweets", "users" or "" (every type)')


@dataclass(frozen=True, slots=True)
class HookConfig:
    """One `[[hooks]]` entry: a command run (no shell) after an event; see daemon/hooks.py."""

    on: Literal["delivered", "rejected", "paused"] = "delivered"
    command: tuple[str, ...] = ()
    timeout_s: float = field(default=300.0, metadata=_POSITIVE)
    max_attempts: int = field(default=5, metadata=_AT_LEAST_ONE)
    job_type: str = field(default="", metadata=_JOB_TYPE_FILTER)
    backoff_initial_s: float = field(default=5.0, metadata=_POSITIVE)
    backoff_max_s: float = field(default=600.0, metadata=_POSITIVE)


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """One `[[webhooks]]` entry: a signed JSON POST after an event; see daemon/webhooks.py."""

    url: str = field(
        default="",
        metadata=_rule(_api_url, "an http(s) URL with a host and no user info, query or #; "
                                 "https unless the host is 127.0.0.1, ::1 or localhost"),
    )
    on: Literal["delivered", "rejected", "paused"] = "delivered"
    job_type: str = field(default="", metadata=_JOB_TYPE_FILTER)
    # The HMAC key: a file, or the name of a systemd credential ($CREDENTIALS_DIRECTORY/NAME).
    secret_file: Path | None = None
    secret_credential: str = ""
    timeout_s: float = field(default=30.0, metadata=_POSITIVE)
    max_attempts: int = field(default=8, metadata=_AT_LEAST_ONE)
    backoff_initial_s: float = field(default=5.0, metadata=_POSITIVE)
    backoff_max_s: float = field(default=600.0, metadata=_POSITIVE)


# Arrays of tables: key -> (entry class, keys every entry must set).
_ARRAYS: dict[str, tuple[type, tuple[str, ...]]] = {
    "hooks": (HookConfig, ("on", "command")),
    "webhooks": (WebhookConfig, ("url", "on")),
}

_SECTIONS: dict[str, type] = {
    "api": ApiConfig,
    "paths": PathsConfig,
    "inbox": InboxConfig,
    "jobs": JobsConfig,
    "poll": PollConfig,
    "log": LogConfig,
    "health": HealthConfig,
    "service": ServiceConfig,
    "retention": RetentionConfig,
    "outputs": OutputsConfig,
    "store": StoreConfig,
}


@dataclass(frozen=True, slots=True)
class Config:
    api: ApiConfig = field(default_factory=ApiConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    inbox: InboxConfig = field(default_factory=InboxConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    poll: PollConfig = field(default_factory=PollConfig)
    log: LogConfig = field(default_factory=LogConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    outputs: OutputsConfig = field(default_factory=OutputsConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    hooks: tuple[HookConfig, ...] = ()
    webhooks: tuple[WebhookConfig, ...] = ()
    source: Path | None = None  # the file this was loaded from

    def for_logging(self) -> dict[str, Any]:
        """Every setting as plain JSON-able values. The config holds no secret (the token is
        never in it), so this is all of it; paths become strings."""
        out: dict[str, Any] = {}
        for name in _SECTIONS:
            section = asdict(getattr(self, name))
            out[name] = {k: str(v) if isinstance(v, Path) else v for k, v in section.items()}
        for name in _ARRAYS:  # no secret: a webhook's secret is only named (file, credential)
            out[name] = [
                {k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
                 for k, v in asdict(entry).items()}
                for entry in getattr(self, name)
            ]
        out["source"] = str(self.source) if self.source else None
        return out


def _show(value: Any) -> str:
    """A value as the operator wrote it in TOML, shortened."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    text = json.dumps(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _convert(hint: Any, value: Any, base: Path) -> tuple[Any, str | None]:
    """TOML value -> field value, or (None, what was expected)."""
    if get_origin(hint) is Literal:
        choices = get_args(hint)
        ok = isinstance(value, str) and value in choices
        return (value, None) if ok else (None, "one of " + ", ".join(map(json.dumps, choices)))
    if hint is bool:
        return (value, None) if isinstance(value, bool) else (None, "true or false")
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return (value, None) if ok else (None, "an integer")
    if hint is float:
        # TOML `2` is an int; accept it for a float field. bool is an int in Python: refuse it.
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and math.isfinite(value):
            return float(value), None
        return None, "a finite number"
    if hint is str:
        return (value, None) if isinstance(value, str) else (None, "a string")
    if hint == tuple[str, ...]:
        ok = (isinstance(value, list) and bool(value)
              and all(isinstance(v, str) and v for v in value))
        return (tuple(value), None) if ok else (None, "a non-empty array of non-empty strings")
    if hint in (Path, Path | None):
        if not isinstance(value, str) or (hint is Path and not value):
            return None, "a non-empty path string" if hint is Path else "a path string"
        if not value:
            return None, None  # "" = not set
        return Path(os.path.normpath(base / value)), None
    raise TypeError(f"no converter for {hint!r}")  # a programming error, not a config error


def _unknown_key(
    path: Path, dotted: str, known: list[str], known_label: str, what: str = "key"
) -> ConfigError:
    name = dotted.rpartition(".")[2]
    if _SECRET_LIKE_KEY.search(name) and name not in ("bearer_token_file", "password_file"):
        where = (f"the database password in {WHERE_THE_DB_PASSWORD_GOES}"
                 if dotted.startswith("store.") else f"the bearer token in {WHERE_THE_TOKEN_GOES}")
        return ConfigError(
            f"{path}: {dotted}: secrets do not belong in the config file (it is read by "
            f"humans, backups and check-config); put {where}"
        )
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return ConfigError(f"{path}: unknown {what} {dotted}{hint}; {known_label}: {', '.join(known)}")


def _build_section(
    path: Path, name: str, table: Any, base: Path, cls: type | None = None, label: str = ""
) -> Any:
    cls = cls or _SECTIONS[name]
    label = label or f"[{name}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: {name} = {_show(table)}: expected a {label} table")
    hints = get_type_hints(cls)
    metadata = {f.name: f.metadata for f in fields(cls)}
    known = list(metadata)
    values: dict[str, Any] = {}
    for key, raw in table.items():
        dotted = f"{name}.{key}"
        if key not in known:
            raise _unknown_key(path, dotted, known, f"keys of {label}")
        value, expected = _convert(hints[key], raw, base)
        meta = metadata[key]
        if expected is None and "ok" in meta and not meta["ok"](value):
            expected = meta["allowed"]
        if expected is not None:
            raise ConfigError(f"{path}: {dotted} = {_show(raw)}: expected {expected}")
        values[key] = value.rstrip("/") if key == "base_url" else value
    return cls(**values)


def _build_array(path: Path, name: str, entries: Any, base: Path) -> tuple[Any, ...]:
    """`[[hooks]]` / `[[webhooks]]`: each entry validated like a section, errors naming
    `hooks[INDEX].key` (INDEX from 0, in file order)."""
    cls, required = _ARRAYS[name]
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: {name} = {_show(entries)}: expected [[{name}]] entries")
    built = []
    for index, table in enumerate(entries):
        where = f"{name}[{index}]"
        entry = _build_section(path, where, table, base, cls, f"[[{name}]]")
        for key in required:
            if not isinstance(table, dict) or key not in table:
                raise ConfigError(f"{path}: {where}.{key} is missing (every [[{name}]] entry "
                                  f"needs {', '.join(required)})")
        if isinstance(entry, WebhookConfig):
            if (entry.secret_file is None) == (not entry.secret_credential):
                raise ConfigError(f"{path}: {where}: set exactly one of secret_file and "
                                  "secret_credential (the HMAC key for the signature)")
            if entry.secret_credential and not re.fullmatch(r"[A-Za-z0-9_.-]+",
                                                            entry.secret_credential):
                raise ConfigError(f"{path}: {where}.secret_credential = "
                                  f"{_show(entry.secret_credential)}: expected a credential "
                                  "name (letters, digits, . _ -)")
        built.append(entry)
    return tuple(built)


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _check_relations(config: Config, path: Path) -> None:
    if config.store.backend == "postgresql" and not config.store.dsn:
        raise ConfigError(f'{path}: store.backend = "postgresql" needs store.dsn (e.g. '
                          '"host=db.example dbname=compliance user=orchestrator")')
    pairs = [
        ("jobs.backoff_initial_s", config.jobs.backoff_initial_s,
         "jobs.backoff_max_s", config.jobs.backoff_max_s),
        ("poll.initial_interval_s", config.poll.initial_interval_s,
         "poll.max_interval_s", config.poll.max_interval_s),
    ]  # fmt: skip
    for low_key, low, high_key, high in pairs:
        if low > high:
            raise ConfigError(f"{path}: {low_key} = {low}: expected at most {high_key} ({high})")
    inbox, outbox, state = config.paths.inbox, config.paths.outbox, config.paths.state_dir
    # Results written where the inbox is scanned would be claimed as new input, and spool
    # files inside the inbox or outbox would be picked up by producers or consumers.
    if _inside(inbox, outbox) or _inside(outbox, inbox):
        raise ConfigError(
            f"{path}: paths.inbox ({inbox}) and paths.outbox ({outbox}) must be separate "
            "folders, neither inside the other"
        )
    spool = config.paths.spool_dir
    if config.store.shared and spool is None:
        # The default spool, <state_dir>/spool, is this host's: the leader could not read
        # what a standby claimed. In a cluster it is a shared folder beside the inbox.
        raise ConfigError(
            f"{path}: store.backend = {config.store.backend!r} needs paths.spool_dir: a folder "
            "on the shared filesystem, beside paths.inbox (every host claims into it)"
        )
    for key, folder in (("paths.inbox", inbox), ("paths.outbox", outbox)):
        if _inside(state, folder):
            raise ConfigError(
                f"{path}: paths.state_dir ({state}) must not be inside {key} ({folder})"
            )
        if spool is not None and (_inside(spool, folder) or _inside(folder, spool)):
            raise ConfigError(
                f"{path}: paths.spool_dir ({spool}) must not be inside {key} ({folder}), "
                "nor contain it; put it beside it, on the same filesystem"
            )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: invalid TOML: the file is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None


def load_config(path: Path) -> Config:
    """Read and validate the config file; raise ConfigError naming the file and the key."""
    path = Path(path)
    data = _read_toml(path)
    base = path.absolute().parent  # relative paths are relative to the config file
    sections: dict[str, Any] = {}
    for name, table in data.items():
        if name in _ARRAYS:
            sections[name] = _build_array(path, name, table, base)
            continue
        if name not in _SECTIONS:
            what = "section" if isinstance(table, dict) else "top-level key"
            raise _unknown_key(path, name, [*_SECTIONS, *_ARRAYS], "sections", what)
        sections[name] = _build_section(path, name, table, base)
    config = Config(**sections, source=path)
    _check_relations(config, path)
    return config
