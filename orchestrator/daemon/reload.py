"""SIGHUP: which config changes the running daemon takes over, and which wait for a restart.

Pure: two Configs in, the changed keys and the config now in effect out. Only settings that
are read afresh at each use are live (the log level, poll pacing, the expiry warning lead);
everything else (paths, API, lanes, health listener, ...) is wired into objects at start-up.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from orchestrator.config import Config

LIVE_KEYS = frozenset({
    "log.level",
    "poll.initial_interval_s",
    "poll.max_interval_s",
    "poll.backoff_factor",
    "poll.rate_reserve",
    "jobs.download_warn_lead_s",
})


@dataclass(frozen=True, slots=True)
class Reload:
    config: Config  # the old config with the live changes applied
    applied: dict[str, Any]  # key -> new value
    needs_restart: list[str]


def _flat(config: Config) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for section, values in config.for_logging().items():
        if isinstance(values, dict):
            out.update({f"{section}.{key}": value for key, value in values.items()})
        elif isinstance(values, list):  # [[hooks]], [[webhooks]]: taken at the next start
            out[section] = values
    return out


def plan_reload(old: Config, new: Config) -> Reload:
    before, after = _flat(old), _flat(new)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    applied = {k: after[k] for k in changed if k in LIVE_KEYS}
    config = old
    if applied:
        config = dataclasses.replace(
            old,
            log=dataclasses.replace(old.log, level=new.log.level),
            poll=new.poll,
            jobs=dataclasses.replace(old.jobs, download_warn_lead_s=new.jobs.download_warn_lead_s),
        )
    return Reload(config, applied, [k for k in changed if k not in LIVE_KEYS])
