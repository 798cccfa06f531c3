"""The bearer token: found in $CREDENTIALS_DIRECTORY, a configured file or the environment.

The token never appears in the config file, in logs or in errors: messages name the source.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from orchestrator.errors import ConfigError

if TYPE_CHECKING:
    from orchestrator.config import Config, StoreConfig

CREDENTIAL_NAME = "bearer-token"
TOKEN_ENV = "X_BEARER_TOKEN"  # noqa: S105 (the variable name, not a token)
_MAX_TOKEN_FILE_BYTES = 64 * 1024  # a token is ~100 bytes; anything huge is the wrong file
WHERE_THE_TOKEN_GOES = (
    f"$CREDENTIALS_DIRECTORY/{CREDENTIAL_NAME} (systemd LoadCredential=), "
    f"a file named by api.bearer_token_file, or the environment variable {TOKEN_ENV}"
)
DB_CREDENTIAL_NAME = "db-password"
DB_PASSWORD_ENV = "PGPASSWORD"  # noqa: S105 (a variable name) libpq's own variable (libpq would read it anyway)
WHERE_THE_DB_PASSWORD_GOES = (
    f"$CREDENTIALS_DIRECTORY/{DB_CREDENTIAL_NAME} (systemd LoadCredential=), a file named by "
    f"store.password_file, the environment variable {DB_PASSWORD_ENV}, or libpq's ~/.pgpass"
)
log = structlog.get_logger(__name__)



def _token_from_file(file: Path, source: str) -> str:
    try:
        with open(file, "rb") as f:
            data = f.read(_MAX_TOKEN_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the bearer token from {source}: {exc.strerror}") from None
    if len(data) > _MAX_TOKEN_FILE_BYTES:
        raise ConfigError(f"{source} is too large to be a bearer token; wrong file?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{source} is not UTF-8 text; wrong file?") from None


def _token_file(config: Config, environ: Mapping[str, str]) -> tuple[Path, str] | None:
    """The file the token comes from, with its description (None: environment or nowhere)."""
    cred_dir = environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        file = Path(cred_dir) / CREDENTIAL_NAME
        if file.exists():
            return file, f"$CREDENTIALS_DIRECTORY/{CREDENTIAL_NAME} ({file})"
    if config.api.bearer_token_file is not None:
        file = config.api.bearer_token_file
        source = f"api.bearer_token_file ({file})"
        if not file.exists():
            # Configured explicitly: silently falling back to another source would surprise.
            raise ConfigError(f"{source} does not exist")
        return file, source
    return None


def _locate_token(config: Config, environ: Mapping[str, str]) -> tuple[str | None, str]:
    """(raw token or None if no source exists, description of the source)."""
    found = _token_file(config, environ)
    if found is not None:
        return _token_from_file(*found), found[1]
    if TOKEN_ENV in environ:
        return environ[TOKEN_ENV], f"environment variable {TOKEN_ENV}"
    return None, ""


def _find_token(config: Config, environ: Mapping[str, str]) -> tuple[str, str]:
    raw, source = _locate_token(config, environ)
    if raw is None:
        raise ConfigError(f"no bearer token found; put it in {WHERE_THE_TOKEN_GOES}")
    token = raw.strip()
    if not token:
        raise ConfigError(f"the bearer token in {source} is empty")
    # Printable ASCII without spaces: anything else is a pasted second line or the wrong file,
    # and would make an invalid (or injected) Authorization header.
    if not re.fullmatch(r"[\x21-\x7e]+", token):
        raise ConfigError(
            f"the bearer token in {source} contains spaces, line breaks or non-ASCII "
            "characters; it must be the token alone"
        )
    return token, source


def load_bearer_token(config: Config, environ: Mapping[str, str] = os.environ) -> str:
    """The bearer token, from $CREDENTIALS_DIRECTORY/bearer-token, then api.bearer_token_file,
    then $X_BEARER_TOKEN. Errors name the source, never the token."""
    return _find_token(config, environ)[0]


def bearer_token_source(config: Config, environ: Mapping[str, str] = os.environ) -> str:
    """Where the token comes from (for check-config and startup logs); validates it too."""
    return _find_token(config, environ)[1]


def warn_if_token_file_readable(config: Config, environ: Mapping[str, str] = os.environ) -> bool:
    """Log one warning (naming the file and its mode, never its content) when the token file
    can be read by its group or by everyone; True when warned. Call once logging is set up."""
    try:
        found = _token_file(config, environ)
        if found is None:
            return False
        mode = found[0].stat().st_mode
    except (ConfigError, OSError):
        return False  # loading the token reports these
    if not mode & 0o044:
        return False
    log.warning(
        "credentials.token_file_readable", file=str(found[0]), mode=f"{stat.S_IMODE(mode):04o}",
        readable_by="everyone" if mode & 0o004 else "its group",
        fix=f"chmod 600 {found[0]}",
    )
    return True


def load_db_password(
    store: StoreConfig, environ: Mapping[str, str] = os.environ
) -> str | None:
    """The PostgreSQL password: $CREDENTIALS_DIRECTORY/db-password, then store.password_file,
    then $PGPASSWORD; None when none is set (libpq then tries ~/.pgpass, or needs none, e.g.
    peer or certificate authentication). Errors name the source, never the password."""
    cred_dir = environ.get("CREDENTIALS_DIRECTORY")
    found: tuple[Path, str] | None = None
    if cred_dir and (Path(cred_dir) / DB_CREDENTIAL_NAME).exists():
        file = Path(cred_dir) / DB_CREDENTIAL_NAME
        found = file, f"$CREDENTIALS_DIRECTORY/{DB_CREDENTIAL_NAME} ({file})"
    elif store.password_file is not None:
        file = store.password_file
        found = file, f"store.password_file ({file})"
        if not file.exists():
            raise ConfigError(f"{found[1]} does not exist")
    if found is None:
        return environ.get(DB_PASSWORD_ENV) or None
    try:
        with open(found[0], "rb") as f:
            data = f.read(_MAX_TOKEN_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the database password from {found[1]}: "
                          f"{exc.strerror}") from None
    if len(data) > _MAX_TOKEN_FILE_BYTES:
        raise ConfigError(f"{found[1]} is too large to be a password; wrong file?")
    try:
        password = data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ConfigError(f"{found[1]} is not UTF-8 text; wrong file?") from None
    if not password or "\n" in password:
        raise ConfigError(f"the database password in {found[1]} is empty or has several lines")
    return password


def db_password_source(store: StoreConfig, environ: Mapping[str, str] = os.environ) -> str:
    """Where the PostgreSQL password comes from (for check-config); validates it too."""
    password = load_db_password(store, environ)
    cred_dir = environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir and (Path(cred_dir) / DB_CREDENTIAL_NAME).exists():
        return f"$CREDENTIALS_DIRECTORY/{DB_CREDENTIAL_NAME}"
    if store.password_file is not None:
        return f"store.password_file ({store.password_file})"
    if password is not None:
        return f"${DB_PASSWORD_ENV}"
    return "none set (libpq then tries ~/.pgpass, peer or certificate authentication)"
