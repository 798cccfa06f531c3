"""`duplicate_content = "link"` (files/link.py): what a later twin may copy from an earlier
delivered input, read from that input's manifest, and the manifest of the linked copy."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core.model import InputFile, InputState, JobType
from orchestrator.files.link import link_intent, linked_manifest
from orchestrator.layout import Layout

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
RESULTS = b'{"id":"1","action":"delete"}\n{"id":"2","action":"delete"}\n'


def item(name: str, stem: str, **fields: Any) -> InputFile:
    base = InputFile(id=1, job_type=JobType.TWEETS, name=name, out_stem=stem,
                     state=InputState.DELIVERED, spool_name="00ff.tweets", inode=1, size_bytes=40)
    return dataclasses.replace(base, **fields)


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "inbox", tmp_path / "outbox", tmp_path / "state")
    layout.outbox_for(JobType.TWEETS).mkdir(parents=True)
    return layout


def deliver(layout: Layout, twin: InputFile, **manifest_extra: object) -> None:
    layout.results_path(twin.job_type, twin.out_stem).write_bytes(RESULTS)
    manifest = {
        "output": {"file": f"{twin.out_stem}.jsonl", "bytes": len(RESULTS), "sha256": "ab" * 32},
        "counts": {"submitted": 5, "affected": 2, "by_reason": {"deleted": 2}},
        "timings": {"delivered_at": "2026-01-04T10:00:00.000Z"},
        "jobs": [{"x_job_id": "1449876127954493440", "status": "complete"}],
        **manifest_extra,
    }
    layout.manifest_path(twin.job_type, twin.out_stem).write_text(json.dumps(manifest))


def test_a_delivered_twin_lends_its_results_and_counts(layout: Layout) -> None:
    twin = item("monday.txt", "monday", id=4)
    deliver(layout, twin)
    intent, why = link_intent(layout, twin)
    assert why == "" and intent is not None
    assert intent["input_id"] == 4 and intent["file"] == "monday.txt"
    assert intent["results"] == "monday.jsonl" and intent["output_bytes"] == len(RESULTS)
    assert (intent["affected"], intent["by_reason"]) == (2, {"deleted": 2})
    assert intent["delivered_at"] == "2026-01-04T10:00:00.000Z"
    assert intent["jobs"] == [{"x_job_id": "1449876127954493440", "status": "complete"}]


def test_a_twin_that_was_itself_linked_passes_on_the_original_jobs(layout: Layout) -> None:
    twin = item("tuesday.txt", "tuesday")
    jobs = [{"x_job_id": "1", "status": "complete"}]
    deliver(layout, twin, jobs=[], linked_to={"jobs": jobs})
    intent, _ = link_intent(layout, twin)
    assert intent is not None and intent["jobs"] == jobs


def test_what_a_consumer_took_or_changed_is_never_linked(layout: Layout) -> None:
    twin = item("monday.txt", "monday")
    manifest = layout.manifest_path(twin.job_type, twin.out_stem)
    results = layout.results_path(twin.job_type, twin.out_stem)
    assert link_intent(layout, twin) == (None, "monday.manifest.json was removed from the outbox")
    deliver(layout, twin)
    results.write_bytes(RESULTS + b"\n")  # edited in place
    assert link_intent(layout, twin) == (
        None, "monday.jsonl was changed (it no longer matches its manifest)")
    results.unlink()
    assert link_intent(layout, twin) == (None, "monday.jsonl was removed from the outbox")
    manifest.write_text("{not json")
    assert link_intent(layout, twin) == (None, "monday.manifest.json is unreadable")
    with open(manifest, "wb") as out:  # huge (sparse): not one of ours, never read whole
        out.truncate(17 * 1024 * 1024)
    assert link_intent(layout, twin) == (None, "monday.manifest.json is not a manifest of ours")


def test_the_linked_copy_says_whose_results_it_carries(layout: Layout) -> None:
    twin = item("monday.txt", "monday", id=4)
    deliver(layout, twin)
    intent, _ = link_intent(layout, twin)
    assert intent is not None
    later = item("copy.txt", "copy", id=9, id_count=5, bad_line_count=1,
                 report={"bad_lines": [{"line": 3}]}, claimed_at=NOW - timedelta(seconds=2))
    dest = layout.results_path(JobType.TWEETS, "copy")
    manifest = linked_manifest(later, intent, dest, NOW)
    assert manifest["input"]["file"] == "copy.txt"
    assert manifest["input"]["bad_lines"] == [{"line": 3}]
    assert manifest["output"] == {"file": "copy.jsonl", "bytes": len(RESULTS),
                                  "sha256": "ab" * 32}
    assert manifest["counts"] == {"submitted": 5, "affected": 2, "by_reason": {"deleted": 2}}
    assert manifest["linked_to"]["file"] == "monday.txt"
    assert manifest["linked_to"]["input_id"] == 4
    assert manifest["batch"] is None and manifest["jobs"] == []  # no job of its own
    assert manifest["timings"]["total_s"] == 2.0
    json.dumps(manifest)  # plain JSON
