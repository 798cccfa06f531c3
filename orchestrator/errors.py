"""Domain errors. Adapters classify HTTP and OS failures once, into these.

Messages never contain a bearer token or a signed URL's query string: adapters build them
from redacted pieces only.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class OrchestratorError(Exception):
    """Something went wrong in the orchestrator."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or type(self).__name__).strip())

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigError(OrchestratorError):
    """The configuration is invalid."""


class InputRejected(OrchestratorError):
    """An input file cannot be processed; it goes to outbox/rejected with the details."""

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


class RemoteError(OrchestratorError):
    """A call to the X API or its storage failed.

    `http_status` is None for connection-level failures. `problem` is the (redacted) RFC 7807
    body or GCS XML error code. `retry_after` is seconds to wait when the server said so
    (rate-limit reset), else None.
    """

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        problem: dict[str, Any] | None = None,
        retry_after: float | None = None,
        endpoint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.problem = problem
        self.retry_after = retry_after
        self.endpoint = endpoint


class RetryableError(RemoteError):
    """A failure that may go away (transient): 5xx, 408, 429, 409 conflict, connection
    refused/reset, DNS, TLS, timeouts, a malformed 200, a corrupt download. Retried with
    backoff for as long as the stage's deadline allows; never a reason to give up."""


class RateLimited(RetryableError):
    """HTTP 429: wait until the rate-limit window resets."""


class ConflictError(RetryableError):
    """HTTP 409: another compliance job is active; wait and try again."""


class PermanentError(RemoteError):
    """A failure that retrying the same request will not fix (400, 404, ...): a permanent
    answer, the only kind that uses up a batch's remote jobs (`max_attempts`)."""


class AuthError(PermanentError):
    """HTTP 401/403 from the X API: the bearer token is missing, wrong or not allowed."""


class UploadWindowClosed(PermanentError):
    """The signed upload URL has expired (GCS ExpiredToken); the job must be recreated."""


class UploadSessionGone(PermanentError):
    """The resumable upload session no longer exists (404/410); start a new session."""


class RemoteJobEnded(UploadWindowClosed):
    """The remote job had already expired or failed before its upload; a new one is needed
    (and, unlike an abandoned one, it no longer blocks the next)."""


class DownloadExpired(PermanentError):
    """The signed download URL has expired; the batch must be resubmitted."""


class UploadDeadlinePassed(UploadWindowClosed):
    """Our own upload deadline (the window minus the margin) passed before the upload could
    be made, e.g. during an outage: a new job, but not a permanent answer of X's."""


class DownloadDeadlinePassed(DownloadExpired):
    """Our own download deadline (the link's expiry minus the margin) passed before the
    results could be fetched: resubmitted, but not a permanent answer of X's."""


class IntegrityError(RetryableError):
    """A download did not match its Content-Length or x-goog-hash; it is retried, never used."""


class LeaseLost(OrchestratorError):
    """This host no longer holds the leader lease (taken over, expired, or its renewal
    failed): it must stop acting on X at once. Raised by a fenced write (nothing written) and
    before a request to X or storage once the local lease deadline has passed (not sent)."""


class ExitCode(IntEnum):
    """Process exit status of every command."""

    OK = 0
    FAILURE = 1  # a runtime failure
    USAGE = 2  # bad arguments or an unusable configuration
    # The state database is damaged: a restart cannot fix it (RestartPreventExitStatus=), an
    # operator restores a backup (deploy/INSTALL.md).
    STATE_CORRUPT = 3
