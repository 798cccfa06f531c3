"""Signed URLs shaped like the real GCS V4 ones X hands out, and their verification.

The signature is an HMAC over the path, the query *exactly as received* (minus the
signature) and the values of the signed headers, so a client that re-encodes `%40`/`%2F`,
reorders parameters or changes `Content-Type` is refused the way GCS refuses it
(403 SignatureDoesNotMatch). 512 hex characters, like an RSA-2048 signature.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote

ALGORITHM = "GOOG4-RSA-SHA256"
SERVICE_ACCOUNT = (
    "complianceapi-public-svc-acct@twttr-compliance-public-prod.iam.gserviceaccount.com"
)
BUCKETS = {"tweets": "twttr-tweet-compliance", "users": "twttr-user-compliance"}
UPLOAD_HEADERS = ("content-type", "host")
RESUMABLE_HEADERS = ("content-length", "content-type", "host", "x-goog-resumable")
DOWNLOAD_HEADERS = ("host",)
_REQUIRED = (
    "X-Goog-Algorithm",
    "X-Goog-Credential",
    "X-Goog-Date",
    "X-Goog-Expires",
    "X-Goog-SignedHeaders",
    "X-Goog-Signature",
)
_DATE_FORMAT = "%Y%m%dT%H%M%SZ"


def goog_date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_DATE_FORMAT)


def split_query(raw_query: str) -> list[tuple[str, str]]:
    """Raw `key=value` pairs, nothing decoded."""
    pairs = []
    for item in raw_query.split("&"):
        if item:
            key, _, value = item.partition("=")
            pairs.append((key, value))
    return pairs


@dataclass(frozen=True, slots=True)
class Verdict:
    """Outcome of checking a signed request. `problem` is None when the signature is good."""

    problem: str | None  # "missing" | "malformed" | "mismatch" | None
    expires_at: datetime | None = None
    canonical_request: str = ""
    string_to_sign: str = ""


class Signer:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _signature(self, canonical: str) -> str:
        # Eight HMAC-SHA256 blocks -> 512 hex chars, the length of the real signatures.
        message = canonical.encode()
        return "".join(
            hmac.new(self._key, message + bytes([block]), hashlib.sha256).hexdigest()
            for block in range(8)
        )

    def sign(
        self,
        base_url: str,
        path: str,
        date: datetime,
        expires_s: int,
        signed_headers: tuple[str, ...],
        header_values: Mapping[str, str],
    ) -> str:
        """A full signed URL for `path` valid `expires_s` seconds from `date`."""
        credential = f"{SERVICE_ACCOUNT}/{date.astimezone(UTC):%Y%m%d}/auto/storage/goog4_request"
        query = "&".join(
            (
                f"X-Goog-Algorithm={ALGORITHM}",
                f"X-Goog-Credential={quote(credential, safe='')}",
                f"X-Goog-Date={goog_date(date)}",
                f"X-Goog-Expires={expires_s}",
                f"X-Goog-SignedHeaders={quote(';'.join(signed_headers), safe='')}",
            )
        )
        canonical = _canonical(path, query, signed_headers, header_values)
        return f"{base_url}{path}?{query}&X-Goog-Signature={self._signature(canonical)}"

    def verify(
        self, path: str, raw_query: str, headers: Mapping[str, str], ignore: tuple[str, ...] = ()
    ) -> Verdict:
        """Check a request against its signature; `ignore` names extra query keys (upload_id)."""
        pairs = [(k, v) for k, v in split_query(raw_query) if k not in ignore]
        found = dict(pairs)
        if "X-Goog-Signature" not in found:
            return Verdict("missing")
        if any(key not in found for key in _REQUIRED):
            return Verdict("malformed")
        try:
            date = datetime.strptime(found["X-Goog-Date"], _DATE_FORMAT).replace(tzinfo=UTC)
            expires_s = int(found["X-Goog-Expires"])
        except ValueError:
            return Verdict("malformed")
        signed = tuple(unquote(found["X-Goog-SignedHeaders"]).split(";"))
        query = "&".join(f"{k}={v}" for k, v in pairs if k != "X-Goog-Signature")
        values = {name: headers.get(name, "") for name in signed}
        canonical = _canonical(path, query, signed, values)
        string_to_sign = "\n".join(
            (ALGORITHM, found["X-Goog-Date"], hashlib.sha256(canonical.encode()).hexdigest())
        )
        good = hmac.compare_digest(self._signature(canonical), found["X-Goog-Signature"])
        return Verdict(
            None if good else "mismatch",
            expires_at=date + timedelta(seconds=expires_s),
            canonical_request=canonical,
            string_to_sign=string_to_sign,
        )


def _canonical(
    path: str, query: str, signed_headers: tuple[str, ...], values: Mapping[str, str]
) -> str:
    lines = [path, query]
    lines.extend(f"{name}:{' '.join(str(values.get(name, '')).split())}" for name in signed_headers)
    lines.append(";".join(signed_headers))
    return "\n".join(lines)
