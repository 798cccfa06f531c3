"""Settings of the sandbox. Plain data, no I/O: imported by the CLI parser, keep it light."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Concurrency = Literal["global", "per-type"]
UnknownJob = Literal["errors", "404"]

# Settings that may change while the sandbox runs (POST /_sandbox/config, Sandbox.configure).
# New values apply to jobs created (windows) or uploaded (processing time) afterwards.
TUNABLE: frozenset[str] = frozenset(
    {
        "concurrency",
        "upload_window_s",
        "download_window_s",
        "processing_time_s",
        "processing_time_per_id_s",
        "rate_limit",
        "rate_window_s",
        "fail_fraction",
        "fail_error",
        "include_result_count",
        "empty_list_meta",
        "unknown_job",
    }
)


@dataclass(slots=True)
class SandboxConfig:
    """How the emulated X compliance API behaves. Defaults follow the recorded real service.

    Windows are whole seconds (they become `X-Goog-Expires`); fractions are rounded up.
    """

    token: str = "sandbox-token"  # noqa: S105 - the sandbox's own fake token
    concurrency: Concurrency = "global"
    upload_window_s: float = 900.0
    download_window_s: float = 604800.0
    processing_time_s: float = 1.0
    processing_time_per_id_s: float = 0.0
    rate_limit: int = 150
    rate_window_s: float = 900.0
    seed: int = 0
    affected_fraction: float = 0.1
    unknown_reason_fraction: float = 0.0
    unknown_reason: str = "edited"
    # Share of the affected IDs answered with two rows (another reason), as X sometimes does.
    repeated_fraction: float = 0.0
    blank_lines: bool = True
    shuffle: bool = True
    include_result_count: bool = True
    # An empty list answers `{}` (the shape twarc accepts; the real one was never recorded),
    # or `{"meta":{"result_count":0}}` (the v2 convention) when set.
    empty_list_meta: bool = False
    fail_fraction: float = 0.0
    fail_error: str = "Internal error"
    data_dir: Path | str | None = None
    # Unknown job id on GET /2/compliance/jobs/:id (not recorded): v2's usual 200 with
    # `errors[]` (resource-not-found), or a 404 problem.
    unknown_job: UnknownJob = "errors"
    # Key for the URL signatures; random per sandbox when None.
    signing_key: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError on settings the sandbox cannot honour."""
        if not self.token:
            raise ValueError("token must not be empty")
        if self.concurrency not in ("global", "per-type"):
            raise ValueError(
                f"concurrency must be 'global' or 'per-type', not {self.concurrency!r}"
            )
        if self.unknown_job not in ("errors", "404"):
            raise ValueError(f"unknown_job must be 'errors' or '404', not {self.unknown_job!r}")
        for name in ("upload_window_s", "download_window_s", "rate_window_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("processing_time_s", "processing_time_per_id_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.rate_limit < 1:
            raise ValueError("rate_limit must be >= 1")
        for name in ("affected_fraction", "unknown_reason_fraction", "repeated_fraction",
                     "fail_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if not self.unknown_reason or '"' in self.unknown_reason or "\\" in self.unknown_reason:
            raise ValueError("unknown_reason must be a non-empty plain word")

    def replace(self, **changes: Any) -> SandboxConfig:
        return dataclasses.replace(self, **changes)

    def update(self, changes: dict[str, Any]) -> None:
        """Change tunable settings in place (validated as a whole before anything changes)."""
        unknown = set(changes) - TUNABLE
        if unknown:
            raise ValueError(f"not tunable at run time: {', '.join(sorted(unknown))}")
        candidate = self.replace(**changes)  # runs validate()
        for name in changes:
            setattr(self, name, getattr(candidate, name))

    def public(self) -> dict[str, Any]:
        """The settings as JSON-friendly data, without the token and the signing key."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data.pop("signing_key")
        data.pop("token")
        if data["data_dir"] is not None:
            data["data_dir"] = str(data["data_dir"])
        return data
