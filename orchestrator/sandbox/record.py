"""One entry of the sandbox's request log. Light module: `SandboxRemote` rebuilds entries."""

from __future__ import annotations

from typing import Any


class RequestRecord(tuple[str, str, int]):
    """(method, path without query, status) of one request; equal to that plain tuple.

    Plus what the status cannot say: a `truncated` response sent its status and its
    Content-Length, then only `sent` body bytes before the connection was closed.
    """

    truncated: bool
    sent: int | None

    def __new__(
        cls, method: str, path: str, status: int, *, truncated: bool = False,
        sent: int | None = None,
    ) -> RequestRecord:
        record = super().__new__(cls, (method, path, status))
        record.truncated = truncated
        record.sent = sent
        return record

    @property
    def method(self) -> str:
        return self[0]

    @property
    def path(self) -> str:
        return self[1]

    @property
    def status(self) -> int:
        return self[2]

    def __repr__(self) -> str:
        base = f"({self[0]!r}, {self[1]!r}, {self[2]!r}"
        return base + (f", truncated after {self.sent} bytes)" if self.truncated else ")")

    def public(self) -> list[Any]:
        """JSON form: [method, path, status], plus {"truncated": true, "sent": N} if cut."""
        entry: list[Any] = [self[0], self[1], self[2]]
        if self.truncated:
            entry.append({"truncated": True, "sent": self.sent})
        return entry

    @classmethod
    def from_public(cls, entry: list[Any]) -> RequestRecord:
        extra = entry[3] if len(entry) > 3 and isinstance(entry[3], dict) else {}
        return cls(str(entry[0]), str(entry[1]), int(entry[2]),
                   truncated=bool(extra.get("truncated")), sent=extra.get("sent"))
