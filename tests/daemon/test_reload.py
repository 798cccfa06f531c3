"""SIGHUP's plan (daemon/reload.py, pure): the live settings are taken over, every other
change is named as needing a restart, and nothing else of the running config moves."""

from __future__ import annotations

from pathlib import Path

from orchestrator.config import Config, load_config
from orchestrator.daemon.reload import LIVE_KEYS, plan_reload


def config(tmp_path: Path, text: str, name: str) -> Config:
    path = tmp_path / name
    path.write_text(text)
    return load_config(path)


def test_no_change_applies_nothing(tmp_path: Path) -> None:
    old = config(tmp_path, "", "a.toml")
    plan = plan_reload(old, config(tmp_path, "", "b.toml"))
    assert plan.applied == {} and plan.needs_restart == [] and plan.config is old


def test_live_keys_are_applied_and_the_rest_waits_for_a_restart(tmp_path: Path) -> None:
    old = config(tmp_path, '[log]\nlevel = "info"\n[paths]\ninbox = "in"\n', "a.toml")
    new = config(tmp_path, '[log]\nlevel = "debug"\n[paths]\ninbox = "elsewhere"\n'
                 "[poll]\nmax_interval_s = 90.0\n[jobs]\nmax_attempts = 9\n", "b.toml")
    plan = plan_reload(old, new)
    assert plan.applied == {"log.level": "debug", "poll.max_interval_s": 90.0}
    assert plan.needs_restart == ["jobs.max_attempts", "paths.inbox"]
    # In effect now: the new live values, the old everything else.
    assert plan.config.log.level == "debug" and plan.config.poll.max_interval_s == 90.0
    assert plan.config.paths.inbox == old.paths.inbox
    assert plan.config.jobs.max_attempts == old.jobs.max_attempts


def test_every_live_key_names_a_real_setting(tmp_path: Path) -> None:
    flat = {f"{section}.{key}" for section, values in
            config(tmp_path, "", "a.toml").for_logging().items() if isinstance(values, dict)
            for key in values}
    assert flat >= LIVE_KEYS
