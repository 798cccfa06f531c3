"""Ground truth: which IDs are non-compliant and what their result rows say.

A pure, deterministic function of (job type, ID, seed and the fractions), shared by the
sandbox's result generator and by tests/benchmarks that need the expected outcome.

Selection uses CRC-32 (C speed, ~70 ns per ID) over a seed/type prefix, so pushing 10M IDs
through the sandbox stays fast; only the affected IDs (a small share) pay for a BLAKE2 digest
that fixes their reason, timestamps and position in the shuffled result file.

X sometimes answers one ID with two rows (e.g. `scrub_geo` and `deleted` for one Tweet):
`repeated_fraction` of the affected IDs get a second row with another reason, placed in
another component, both derived from the same seed.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterable, Iterator
from functools import lru_cache
from hashlib import blake2b
from typing import Any

# Twitter snowflake epoch (ms) and plausibility bounds for deriving created_at from an ID.
TWEPOCH_MS = 1288834974657
_SNOWFLAKE_MIN = (86_400_000) << 22  # IDs minted at least a day after the epoch
_CAP_MS = 1_893_456_000_000  # 2030-01-01: later "snowflake" times are not plausible
_REDACT_CAP_MS = 1_751_241_600_000  # 2025-06-30: latest redaction time we invent
_DAY_MS = 86_400_000
# Pre-snowflake creation ranges (first Tweet 2006-03-21; user IDs went snowflake ~2013).
_FALLBACK_RANGE_MS = {
    "tweets": (1_142_899_200_000, 1_288_834_974_000),
    "users": (1_152_921_600_000, 1_388_534_400_000),
}

# Documented reasons (legacy docs), weighted roughly like recorded files (mostly
# deleted/suspended). `scrub_geo` only exists for Tweets.
REASONS: dict[str, tuple[tuple[str, int], ...]] = {
    "tweets": (
        ("deleted", 40),
        ("suspended", 30),
        ("protected", 12),
        ("deactivated", 10),
        ("scrub_geo", 8),
    ),
    "users": (("deleted", 45), ("suspended", 35), ("protected", 10), ("deactivated", 10)),
}
JOB_TYPES = ("tweets", "users")
COMPONENTS = 20  # recorded result objects are composed of 20 parts (x-goog-component-count)


def _reason_table(job_type: str) -> tuple[str, ...]:
    table: list[str] = []
    for reason, weight in REASONS[job_type]:
        table.extend([reason] * weight)
    return tuple(table)


class Truth:
    """Precomputed parameters for one (job type, seed, fractions): fast bulk decisions."""

    def __init__(
        self,
        job_type: str,
        seed: int = 0,
        affected_fraction: float = 0.1,
        unknown_reason_fraction: float = 0.0,
        unknown_reason: str = "edited",
        repeated_fraction: float = 0.0,
    ) -> None:
        if job_type not in JOB_TYPES:
            raise ValueError(f"job type must be one of {JOB_TYPES}, not {job_type!r}")
        fractions = (affected_fraction, unknown_reason_fraction, repeated_fraction)
        if not all(0.0 <= fraction <= 1.0 for fraction in fractions):
            raise ValueError("fractions must be between 0 and 1")
        self.job_type = job_type
        self.unknown_reason = unknown_reason
        self._prefix = f"{int(seed)}:{job_type}:".encode()
        self._crc_init = zlib.crc32(self._prefix)
        # crc < threshold selects the share; 2**32 selects everything.
        self._threshold = min(int(affected_fraction * 2**32), 2**32)
        self._unknown_threshold = min(int(unknown_reason_fraction * 65536), 65536)
        self._repeat_threshold = min(int(repeated_fraction * 65536), 65536)
        self._reasons = _reason_table(job_type)
        self._fallback = _FALLBACK_RANGE_MS[job_type]
        self._format = _format_tweet_time if job_type == "tweets" else _format_user_time

    # -- selection --------------------------------------------------------------------
    def is_affected(self, id_bytes: bytes) -> bool:
        return zlib.crc32(id_bytes, self._crc_init) < self._threshold

    def select(self, ids: Iterable[bytes]) -> list[bytes]:
        """The affected IDs among `ids` (all non-empty), in input order."""
        crc, init, threshold = zlib.crc32, self._crc_init, self._threshold
        return [i for i in ids if crc(i, init) < threshold]

    # -- rows -------------------------------------------------------------------------
    def _digest(self, id_bytes: bytes, salt: bytes = b"") -> int:
        return int.from_bytes(blake2b(self._prefix + salt + id_bytes, digest_size=16).digest())

    def is_repeated(self, id_bytes: bytes) -> bool:
        """Whether this affected ID is answered with two rows (digest bits 8-23)."""
        if not self._repeat_threshold:
            return False
        return (self._digest(id_bytes) >> 8) & 0xFFFF < self._repeat_threshold

    def fields(
        self, id_bytes: bytes, *, second: bool = False
    ) -> tuple[str, str | None, str, int]:
        """(created_at, redacted_at or None, reason, component) for an affected ID; `second`:
        those of its second row (only meaningful when `is_repeated`)."""
        # One 128-bit digest, sliced: reason | unknown-reason | redacted flag | redaction
        # offset | fallback creation time | repeated | component. Hot path: keep it flat.
        h = self._digest(id_bytes)
        if (h >> 96) & 0xFFFF < self._unknown_threshold:
            reason = self.unknown_reason
        else:
            reason = self._reasons[(h >> 112) % len(self._reasons)]
        if second:
            # Same ID, so the same creation time; another reason, redaction and component.
            reason = _second_reason(self.job_type, reason)
            created_h = h
            h = self._digest(id_bytes, b"second:")
            h = (h & ~(0xFFFFFFFF << 24)) | (created_h & (0xFFFFFFFF << 24))
        number = int(id_bytes)
        created_ms = (number >> 22) + TWEPOCH_MS
        if number < _SNOWFLAKE_MIN or created_ms > _CAP_MS:
            low, high = self._fallback
            created_ms = low + ((h >> 24) & 0xFFFFFFFF) * (high - low) // 2**32
        fmt = self._format
        if reason == "suspended":  # recorded: suspended rows carry no redacted_at
            redacted = None
        elif reason == "deleted" or (h >> 88) & 1:
            low = created_ms + _DAY_MS
            span = max(_REDACT_CAP_MS - low, 30 * _DAY_MS)
            redacted = fmt(low + ((h >> 56) & 0xFFFFFFFF) * span // 2**32)
        else:
            redacted = None
        return fmt(created_ms), redacted, reason, (h & 0xFF) % COMPONENTS

    def row(self, id_bytes: bytes, *, second: bool = False) -> dict[str, str]:
        created, redacted, reason, _ = self.fields(id_bytes, second=second)
        row = {"id": id_bytes.decode(), "action": "delete", "created_at": created}
        if redacted is not None:
            row["redacted_at"] = redacted
        row["reason"] = reason
        return row

    def rows(self, id_bytes: bytes) -> list[dict[str, str]]:
        """Every row X answers for an affected ID: one, or two for a repeated ID."""
        if self.is_repeated(id_bytes):
            return [self.row(id_bytes), self.row(id_bytes, second=True)]
        return [self.row(id_bytes)]

    def row_lines(self, id_bytes: bytes) -> list[tuple[bytes, int]]:
        """`row_line` for each row of an affected ID (two for a repeated ID)."""
        if self.is_repeated(id_bytes):
            return [self.row_line(id_bytes), self.row_line(id_bytes, second=True)]
        return [self.row_line(id_bytes)]

    def row_line(self, id_bytes: bytes, *, second: bool = False) -> tuple[bytes, int]:
        """The NDJSON line (with newline) for an affected ID, and its result component."""
        created, redacted, reason, component = self.fields(id_bytes, second=second)
        ident = id_bytes.decode()
        if redacted is None:
            line = (
                f'{{"id":"{ident}","action":"delete","created_at":"{created}",'
                f'"reason":"{reason}"}}\n'
            )
        else:
            line = (
                f'{{"id":"{ident}","action":"delete","created_at":"{created}",'
                f'"redacted_at":"{redacted}","reason":"{reason}"}}\n'
            )
        return line.encode(), component


def _second_reason(job_type: str, first: str) -> str:
    """The reason of a repeated ID's second row: geo scrubbed beside a deletion for Tweets
    (the documented pair), another documented reason for users."""
    if job_type == "tweets":
        return "deleted" if first == "scrub_geo" else "scrub_geo"
    return "suspended" if first == "deactivated" else "deactivated"


_DAYS: dict[int, str] = {}


def _day_prefix(day: int) -> str:
    prefix = _DAYS.get(day)
    if prefix is None:
        prefix = time.strftime("%Y-%m-%dT", time.gmtime(day * 86400))
        if len(_DAYS) < 100_000:
            _DAYS[day] = prefix
    return prefix


def _format_tweet_time(ms: int) -> str:
    """Tweet style, as recorded: `2019-08-10T12:22:39.022Z`."""
    seconds, milli = divmod(ms, 1000)
    day, in_day = divmod(seconds, 86400)
    hour, rest = divmod(in_day, 3600)
    minute, second = divmod(rest, 60)
    return f"{_day_prefix(day)}{hour:02d}:{minute:02d}:{second:02d}.{milli:03d}Z"


def _format_user_time(ms: int) -> str:
    """User style, as recorded: `2019-03-02T03:37:59+00:00` (no milliseconds)."""
    day, in_day = divmod(ms // 1000, 86400)
    hour, rest = divmod(in_day, 3600)
    minute, second = divmod(rest, 60)
    return f"{_day_prefix(day)}{hour:02d}:{minute:02d}:{second:02d}+00:00"


@lru_cache(maxsize=64)
def truth_for(
    job_type: str,
    seed: int = 0,
    affected_fraction: float = 0.1,
    unknown_reason_fraction: float = 0.0,
    unknown_reason: str = "edited",
    repeated_fraction: float = 0.0,
) -> Truth:
    return Truth(job_type, seed, affected_fraction, unknown_reason_fraction, unknown_reason,
                 repeated_fraction)


def _id_bytes(id_str: str | int | bytes) -> bytes:
    raw = id_str if isinstance(id_str, bytes) else str(id_str).encode()
    raw = raw.strip()
    if not raw.isdigit() or len(raw) > 19:
        raise ValueError("an ID is 1 to 19 digits")
    return raw


def expected_result(
    job_type: str,
    id_str: str | int,
    seed: int = 0,
    affected_fraction: float = 0.1,
    unknown_reason_fraction: float = 0.0,
    unknown_reason: str = "edited",
    repeated_fraction: float = 0.0,
) -> dict[str, Any] | None:
    """The result row the sandbox writes for this ID, or None when the ID is compliant.
    For a repeated ID (see `repeated_fraction`) this is its first row; `expected_rows` gives
    both."""
    rows = expected_rows(job_type, id_str, seed, affected_fraction, unknown_reason_fraction,
                         unknown_reason, repeated_fraction)
    return rows[0] if rows else None


def expected_rows(
    job_type: str,
    id_str: str | int,
    seed: int = 0,
    affected_fraction: float = 0.1,
    unknown_reason_fraction: float = 0.0,
    unknown_reason: str = "edited",
    repeated_fraction: float = 0.0,
) -> list[dict[str, Any]]:
    """Every result row the sandbox writes for this ID: none, one, or two (repeated ID)."""
    truth = truth_for(job_type, seed, affected_fraction, unknown_reason_fraction,
                      unknown_reason, repeated_fraction)
    raw = _id_bytes(id_str)
    if not truth.is_affected(raw):
        return []
    return list(truth.rows(raw))


def iter_expected(
    job_type: str,
    ids: Iterable[str | int | bytes],
    seed: int = 0,
    affected_fraction: float = 0.1,
    unknown_reason_fraction: float = 0.0,
    unknown_reason: str = "edited",
    repeated_fraction: float = 0.0,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(id, row) for each result row of the non-compliant IDs among `ids`, in input order
    (streaming); a repeated ID yields two pairs."""
    truth = truth_for(job_type, seed, affected_fraction, unknown_reason_fraction,
                      unknown_reason, repeated_fraction)
    for item in ids:
        raw = _id_bytes(item)
        if truth.is_affected(raw):
            ident = raw.decode()
            for row in truth.rows(raw):
                yield ident, row
