"""Dataset baselines: a redone delivery (kill -9 before its manifest) writes the same delta,
compared with the same earlier delivery, and old baselines go only once nothing needs them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from orchestrator.core.model import InputFile, InputState, JobType
from orchestrator.daemon.datasets import after_delivery, baseline_dir, dataset_delta, delta_path
from orchestrator.layout import Layout

NOW = datetime(2026, 12, 2, tzinfo=UTC)


def deliverable(layout: Layout, input_id: int, rows: dict[str, str]) -> tuple[InputFile, Path]:
    """An input of dataset `d` as delivery sees it: IDs in the spool, results in the outbox."""
    item = InputFile(id=input_id, job_type=JobType.TWEETS, name=f"d@{input_id}.txt",
                     out_stem=f"d@{input_id}", state=InputState.BATCHED,
                     spool_name=f"s{input_id}", inode=1, size_bytes=1)
    layout.ensure()
    (layout.spool / item.ids_name).write_text("".join(f"{i}\n" for i in [*rows, "99"]))
    results = layout.results_path(item.job_type, item.out_stem)
    results.write_text("".join(
        json.dumps({"id": i, "action": "delete", "reason": r}) + "\n" for i, r in rows.items()))
    return item, results


async def test_a_redone_delivery_compares_with_the_same_earlier_one(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "inbox", tmp_path / "outbox", tmp_path / "state")
    first, first_results = deliverable(layout, 1, {"5": "deleted"})
    await dataset_delta(layout, first, first_results, NOW, lambda: None)
    await after_delivery(layout, first)
    second, second_results = deliverable(layout, 2, {"5": "suspended", "6": "deleted"})
    section = await dataset_delta(layout, second, second_results, NOW, lambda: None)
    assert section is not None
    written = delta_path(layout, second).read_bytes()
    # kill -9 here (before the manifest): the delivery is redone, with its own baseline
    # already on disk. It must not compare with itself.
    again = await dataset_delta(layout, second, second_results, NOW, lambda: None)
    assert again == section
    assert delta_path(layout, second).read_bytes() == written
    assert section["compared_with"]["file"] == "d@1.txt"
    assert section["counts"] == {"new": 1, "changed": 1, "reversed": 0, "not_rechecked": 0,
                                 "unchanged": 0}


async def test_old_baselines_go_once_two_newer_ones_exist(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "inbox", tmp_path / "outbox", tmp_path / "state")
    for n in (1, 2, 3):
        item, results = deliverable(layout, n, {"5": "deleted"})
        await dataset_delta(layout, item, results, NOW, lambda: None)
        await after_delivery(layout, item)
    folder = baseline_dir(layout, item, "d")
    assert sorted(p.name for p in folder.iterdir()) == ["2.json", "2.sorted", "3.json",
                                                         "3.sorted"]


async def test_an_input_of_no_dataset_gets_no_delta(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "inbox", tmp_path / "outbox", tmp_path / "state")
    item, results = deliverable(layout, 1, {"5": "deleted"})
    plain = InputFile(id=1, job_type=JobType.TWEETS, name="plain.txt", out_stem="plain",
                      state=InputState.BATCHED, spool_name=item.spool_name, inode=1,
                      size_bytes=1)
    assert await dataset_delta(layout, plain, results, NOW, lambda: None) is None
    assert not (layout.state_dir / "datasets").exists()
