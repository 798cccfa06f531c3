"""HTTP helpers shared by the X API client and the storage transfers."""

from __future__ import annotations

import aiohttp

MAX_ERROR_BODY_BYTES = 64 * 1024


async def read_limited(resp: aiohttp.ClientResponse, limit: int = MAX_ERROR_BODY_BYTES) -> bytes:
    """Up to `limit` bytes of a (error) body: enough to classify, never unbounded."""
    parts: list[bytes] = []
    size = 0
    while size < limit:
        block = await resp.content.read(limit - size)
        if not block:
            break
        parts.append(block)
        size += len(block)
    return b"".join(parts)
