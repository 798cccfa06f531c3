"""A dataset re-checked: the second delivery's delta against the first, end to end through
the sandbox (a second sandbox seed plays X changing its mind about some IDs), compared with a
brute-force diff of the two delivered result files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from admin_helpers import arun_cli
from daemon_helpers import drained, load, make_ids, read_results, running_service
from resilience_helpers import write_config_ex

from orchestrator.sandbox import Sandbox

MakeSandbox = Callable[..., Sandbox]


async def deliver(tmp_path: Path, make_sandbox: MakeSandbox,
                  capsys: pytest.CaptureFixture[str], seed: int,
                  ids: list[str]) -> tuple[str, dict[str, Any]]:
    src = tmp_path / "dataset.txt"
    src.write_text("".join(f"{i}\n" for i in ids))
    async with make_sandbox(seed=seed, affected_fraction=0.3) as sandbox:
        config_path = write_config_ex(tmp_path, sandbox.base_url)
        async with running_service(load(config_path)) as service:
            run = await arun_cli(capsys, "submit", src, "--type", "tweets", "--dataset",
                                 "weekly", "--config", config_path, "--json")
            assert run.code == 0, run.err
            await drained(service)
    stem = Path(run.json["name"]).stem
    manifest = json.loads((tmp_path / "outbox/tweets" / f"{stem}.manifest.json").read_text())
    return stem, manifest


def delta_lines(tmp_path: Path, stem: str) -> list[dict[str, Any]]:
    text = (tmp_path / "outbox/tweets" / f"{stem}.delta.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


async def test_a_second_delivery_lists_what_changed_since_the_first(
    tmp_path: Path, make_sandbox: MakeSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "inbox/tweets").mkdir(parents=True)
    first_ids = make_ids(501, 300)
    first, manifest = await deliver(tmp_path, make_sandbox, capsys, 11, first_ids)
    before = read_results(tmp_path, "tweets", first)
    assert manifest["delta"]["first_delivery"] is True
    assert manifest["delta"]["compared_with"] is None
    assert manifest["delta"]["file"] is None and manifest["delta"]["counts"] is None
    assert not (tmp_path / "outbox/tweets" / f"{first}.delta.jsonl").exists()
    assert before, "the seed lists some of these IDs"

    # A week later: some IDs were removed from the dataset, some added; X's answers differ.
    second_ids = first_ids[:200] + make_ids(502, 100)
    second, manifest = await deliver(tmp_path, make_sandbox, capsys, 12, second_ids)
    after = read_results(tmp_path, "tweets", second)
    delta = manifest["delta"]
    assert delta["dataset"] == "weekly"
    assert delta["first_delivery"] is False
    assert delta["compared_with"]["file"] == f"{first}.txt"
    assert delta["file"] == f"{second}.delta.jsonl"

    listed = set(second_ids)
    expected = {}
    for tweet_id in set(before) | set(after):
        if tweet_id in after and tweet_id not in before:
            expected[tweet_id] = ("new", [after[tweet_id]], None)
        elif tweet_id in after and after[tweet_id]["reason"] != before[tweet_id]["reason"]:
            expected[tweet_id] = ("changed", [after[tweet_id]], [before[tweet_id]])
        elif tweet_id not in after and tweet_id in listed:
            expected[tweet_id] = ("reversed", None, [before[tweet_id]])
    got = {e["id"]: (e["change"], e.get("rows"), e.get("previous"))
           for e in delta_lines(tmp_path, second)}
    assert got == expected
    kinds = [change for change, _, _ in expected.values()]
    assert {"new", "reversed"} <= set(kinds)  # the seeds make both happen
    dropped = {i for i in before if i not in after and i not in listed}
    assert delta["counts"]["not_rechecked"] == len(dropped) > 0
    assert delta["counts"]["reversed"] == kinds.count("reversed")
    baselines = tmp_path / "state/datasets/tweets/weekly"
    assert len(list(baselines.glob("*.sorted"))) == 2
