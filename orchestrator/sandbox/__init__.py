"""Offline emulator of the X API v2 batch compliance endpoints and their signed-URL storage.

    from orchestrator.sandbox import Sandbox, SandboxConfig, expected_result

Exports are loaded lazily: `orchestrator.sandbox.command` is imported when the CLI parser is
built, and must not pull in aiohttp.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.sandbox.clock import SandboxClock
    from orchestrator.sandbox.config import SandboxConfig
    from orchestrator.sandbox.remote import SandboxProcess, SandboxRemote
    from orchestrator.sandbox.server import Sandbox
    from orchestrator.sandbox.threaded import SandboxThread
    from orchestrator.sandbox.truth import expected_result, expected_rows, iter_expected

__all__ = [
    "Sandbox",
    "SandboxClock",
    "SandboxConfig",
    "SandboxProcess",
    "SandboxRemote",
    "SandboxThread",
    "expected_result",
    "expected_rows",
    "iter_expected",
]

_EXPORTS = {
    "Sandbox": "orchestrator.sandbox.server",
    "SandboxClock": "orchestrator.sandbox.clock",
    "SandboxConfig": "orchestrator.sandbox.config",
    "SandboxProcess": "orchestrator.sandbox.remote",
    "SandboxRemote": "orchestrator.sandbox.remote",
    "SandboxThread": "orchestrator.sandbox.threaded",
    "expected_result": "orchestrator.sandbox.truth",
    "expected_rows": "orchestrator.sandbox.truth",
    "iter_expected": "orchestrator.sandbox.truth",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
