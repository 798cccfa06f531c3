"""Ground truth: which IDs are non-compliant and what their result rows say.

A pure, deterministic function of (job type, ID, seed and the fractions), shared by the
sandbox's result generator and by tests/benchmarks that need the expected outcome.

Selection uses CRC-32 (C speed, ~70 ns per ID) over a seed/type prefix, so pushing 10M IDs
through the sandbox stays fast; only the affected IDs (a small share) pay for a BLAKE2 digest
that fixes their reason, timestamps and position in the shuffled result file.
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
    ) -> None:
        if job_type not in JOB_TYPES:
            raise ValueError(f"job type must be one of {JOB_TYPES}, not {job_type!r}")
        if not 0.0 <= affected_fraction <= 1.0 or not 0.0 <= unknown_reason_fraction <= 1.0:
            raise ValueError("fractions must be between 0 and 1")
        self.job_type = job_type
        self.unknown_reason = unknown_reason
        self._prefix = f"{int(seed)}:{job_type}:".encode()
        self._crc_init = zlib.crc32(self._prefix)
        # crc < threshold selects the share; 2**32 selects everything.
        self._threshold = min(int(affected_fraction * 2**32), 2**32)
        self._unknown_threshold = min(int(unknown_reason_fraction * 65536), 65536)
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
    def fields(self, id_bytes: bytes) -> tuple[str, str | None, str, int]:
        """(created_at, redacted_at or None, reason, component) for an affected ID."""
        # One 128-bit digest, sliced: reason | unknown-reason | redacted flag | redaction
        # offset | fallback creation time | component. Hot path: keep it flat.
        h = int.from_bytes(blake2b(self._prefix + id_bytes, digest_size=16).digest())
        if (h >> 96) & 0xFFFF < self._unknown_threshold:
            reason = self.unknown_reason
        else:
            reason = self._reasons[(h >> 112) % len(self._reasons)]
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

    def row(self, id_bytes: bytes) -> dict[str, str]:
        created, redacted, reason, _ = self.fields(id_bytes)
        row = {"id": id_bytes.decode(), "action": "delete", "created_at": created}
        if redacted is not None:
            row["redacted_at"] = redacted
        row["reason"] = reason
        return row

    def row_line(self, id_bytes: bytes) -> tuple[bytes, int]:
        """The NDJSON line (with newline) for an affected ID, and its result component."""
        created, redacted, reason, component = self.fields(id_bytes)
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
) -> Truth:
    return Truth(job_type, seed, affected_fraction, unknown_reason_fraction, unknown_reason)


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
) -> dict[str, Any] | None:
    """The result row the sandbox writes for this ID, or None when the ID is compliant."""
    truth = truth_for(job_type, seed, affected_fraction, unknown_reason_fraction, unknown_reason)
    raw = _id_bytes(id_str)
    if not truth.is_affected(raw):
        return None
    return truth.row(raw)


def iter_expected(
    job_type: str,
    ids: Iterable[str | int | bytes],
    seed: int = 0,
    affected_fraction: float = 0.1,
    unknown_reason_fraction: float = 0.0,
    unknown_reason: str = "edited",
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(id, row) for each non-compliant ID among `ids`, in input order (streaming)."""
    truth = truth_for(job_type, seed, affected_fraction, unknown_reason_fraction, unknown_reason)
    for item in ids:
        raw = _id_bytes(item)
        if truth.is_affected(raw):
            yield raw.decode(), truth.row(raw)
