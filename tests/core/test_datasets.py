"""The dataset naming convention: NAME@STAMP.ext belongs to NAME; anything else to none."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from orchestrator.core.datasets import dataset_file_name, dataset_of, valid_dataset_name

NOW = datetime(2026, 12, 2, 12, 0, 5, tzinfo=UTC)


def test_a_submitted_name_round_trips() -> None:
    name = dataset_file_name("weekly.archive_1", NOW, ".jsonl")
    assert name == "weekly.archive_1@20261202T120005Z.jsonl"
    assert dataset_of(name) == "weekly.archive_1"
    assert dataset_file_name("a", NOW, ".txt", attempt=2) == "a@20261202T120005Z-3.txt"


@pytest.mark.parametrize("name", ["ids.txt", "@x.txt", "a@", "../x@1.txt", "-a@1", "a b@1"])
def test_other_names_belong_to_no_dataset(name: str) -> None:
    assert dataset_of(name) is None


@pytest.mark.parametrize("name", ["", "x" * 65, ".hidden", "a/b", "a@b"])
def test_bad_dataset_names_are_refused(name: str) -> None:
    assert not valid_dataset_name(name)
    with pytest.raises(ValueError, match="expected 1-64"):
        dataset_file_name(name, NOW, ".txt")
