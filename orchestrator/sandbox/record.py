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
    # The client's User-Agent (daemons end it with `host/<host_id>`), and the order in which
    # requests ARRIVED (the log itself is in the order they finished).
    user_agent: str | None
    arrived: int | None

    def __new__(
        cls, method: str, path: str, status: int, *, truncated: bool = False,
        sent: int | None = None, user_agent: str | None = None, arrived: int | None = None,
    ) -> RequestRecord:
        record = super().__new__(cls, (method, path, status))
        record.truncated = truncated
        record.sent = sent
        record.user_agent = user_agent
        record.arrived = arrived
        return record

    @property
    def host(self) -> str | None:
        """The host_id in the User-Agent (`... host/<host_id>`), if any."""
        agent = self.user_agent or ""
        marker = agent.rfind("host/")
        return agent[marker + 5:].split()[0] if marker >= 0 and agent[marker + 5:] else None

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
        extra: dict[str, Any] = {}
        if self.truncated:
            extra.update(truncated=True, sent=self.sent)
        if self.user_agent is not None:
            extra["user_agent"] = self.user_agent
        if self.arrived is not None:
            extra["arrived"] = self.arrived
        if extra:
            entry.append(extra)
        return entry

    @classmethod
    def from_public(cls, entry: list[Any]) -> RequestRecord:
        extra = entry[3] if len(entry) > 3 and isinstance(entry[3], dict) else {}
        return cls(str(entry[0]), str(entry[1]), int(entry[2]),
                   truncated=bool(extra.get("truncated")), sent=extra.get("sent"),
                   user_agent=extra.get("user_agent"), arrived=extra.get("arrived"))
