"""Pure helpers that keep secrets out of logs, errors and status output.

Signed URLs carry their credential in the query string (`X-Goog-Signature=...`), and the
bearer token travels in a header; neither may reach a log line or an exception message.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

REDACTED = "<redacted>"

# Keys whose values are always masked, wherever they appear in a log event.
SECRET_KEY_PATTERN = re.compile(
    r"token|secret|password|authorization|signature|credential|upload_url|download_url"
    r"|session_url|location",
    re.IGNORECASE,
)

# Any URL with a query string: keep scheme/host/path, drop the query.
_URL_WITH_QUERY = re.compile(
    r"(https?://[^\s?\"'<>]+)\?(?!<redacted>)[^\s\"'<>]*", re.IGNORECASE
)
# Bearer tokens in free text ("Authorization: Bearer abc", "Bearer abc"); not the words of
# a message about one ("the bearer token was refused").
_BEARER = re.compile(r"(bearer\s+)(?!token\b)[A-Za-z0-9%._~+/=-]+", re.IGNORECASE)
# Query parameters that carry signatures, even outside a full URL.
_SIGNED_PARAM = re.compile(
    r"((?:X-Goog-)?(?:Signature|Credential)=)[^&\s\"'<>]+", re.IGNORECASE
)


def redact_url(url: str) -> str:
    """`https://host/path?secret` -> `https://host/path?<redacted>` (no query -> unchanged)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    if not parts.query:
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, REDACTED, ""))


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Scrub URL query strings, bearer tokens, signature parameters and known secret values."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    text = _URL_WITH_QUERY.sub(lambda m: f"{m.group(1)}?{REDACTED}", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
    return _SIGNED_PARAM.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
