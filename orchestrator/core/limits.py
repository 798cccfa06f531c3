"""X's published limits for batch compliance (docs/x-compliance-api.md section 2), in one place.

Everything that plans around them (the poll spacing floor, the rate-limit waits, the upload
deadline checks in config) reads these names instead of repeating the numbers.
"""

from __future__ import annotations

from typing import Final

# 150 requests per fixed 15-minute window, per app, with a separate bucket per endpoint
# (POST /2/compliance/jobs, GET one job, GET the list). [DOC]
RATE_LIMIT_REQUESTS: Final = 150
RATE_WINDOW_S: Final = 900.0
# A job's upload URL is valid for 15 minutes after creation (`X-Goog-Expires=900`). [DOC]
UPLOAD_WINDOW_S: Final = 900.0
# Requests of each window left for the app's other clients unless configured otherwise.
DEFAULT_RATE_RESERVE: Final = 10


def poll_spacing_s(
    reserve: int = DEFAULT_RATE_RESERVE, window_s: float = RATE_WINDOW_S
) -> float:
    """Shortest interval between polls of one job after another that stays within one
    endpoint's budget while keeping `reserve` requests per window free. `window_s` differs
    from X's only for an emulator whose clock is scaled (config `poll.rate_window_s`)."""
    return window_s / max(1, RATE_LIMIT_REQUESTS - reserve)
