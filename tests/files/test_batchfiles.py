"""Issue 10 item 3: a packed batch's results, split per input, equal what a single-file batch
delivers: every row kept (IDs may repeat), X's order kept, counts by the top-level reason.

A single-file batch delivers the normalised download as is, counted by `normalise_results`;
a packed batch splits the normalised download with `split_results`, counted by
`count_results`. Both paths must agree byte for byte and count for count.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.files import batchfiles
from orchestrator.files.batchfiles import ResultCounts, Slice, count_results, split_results
from orchestrator.files.results import NO_REASON, normalise_results
from orchestrator.store.scratch import ResultIndex


@pytest.fixture(params=["in-memory", "scratch-db"])
def split_way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of splitting a pack must give the same: in memory (small packs) and through
    the scratch database (large ones)."""
    if request.param == "scratch-db":
        monkeypatch.setattr(batchfiles, "IN_MEMORY_IDS", 0)
    return str(request.param)


def _row(ident: str, action: str, reason: object, **extra: object) -> bytes:
    obj: dict[str, object] = {"id": ident, "action": action,
                              "created_at": "2021-06-15T07:32:10.000Z", "reason": reason}
    obj.update(extra)
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


# Input A holds 111 and 222, input B holds 333. X answers a repeated ID with two rows.
ROWS_A = [
    _row("111", "scrub_geo", "scrub_geo"),
    _row("111", "delete", "deleted"),
    # A nested object with its own "reason" key, *before* the top-level one.
    b'{"id":"222","action":"delete","detail":{"reason":"nested"},"reason":"suspended"}\n',
    _row("222", "delete", None),  # a null reason
]
ROWS_B = [_row("333", "delete", "protected"), _row("333", "delete", None)]


def _single_file_batch(tmp_path: Path, rows: list[bytes]) -> tuple[bytes, ResultCounts]:
    raw = tmp_path / "single.raw"
    raw.write_bytes(b"\n".join(rows))  # blank lines between rows, as X sends them
    out = tmp_path / "single.jsonl"
    report = normalise_results(raw, out)
    return out.read_bytes(), ResultCounts(report.affected, report.by_reason)


def _packed_batch(tmp_path: Path) -> tuple[list[bytes], list[ResultCounts]]:
    ids_a, ids_b = tmp_path / "a.ids", tmp_path / "b.ids"
    ids_a.write_bytes(b"111\n222\n")
    ids_b.write_bytes(b"333\n")
    raw = tmp_path / "packed.raw"
    # X's order interleaves the inputs' rows.
    raw.write_bytes(b"".join([ROWS_A[0], ROWS_B[0], ROWS_A[1], b"\n", ROWS_A[2], ROWS_B[1],
                              ROWS_A[3]]))
    normalised = tmp_path / "packed.jsonl"
    normalise_results(raw, normalised)
    outs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    counts = split_results(normalised, [(Slice(ids_a), outs[0]), (Slice(ids_b), outs[1])],
                           ResultIndex(tmp_path / "scratch.db"))
    return [out.read_bytes() for out in outs], counts


def test_packed_and_single_file_batches_deliver_the_same_rows_and_counts(
    tmp_path: Path, split_way: str,
) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    single_a, single_counts_a = _single_file_batch(tmp_path / "one", ROWS_A)
    single_b, single_counts_b = _single_file_batch(tmp_path / "two", ROWS_B)
    (packed_a, packed_b), (packed_counts_a, packed_counts_b) = _packed_batch(tmp_path)
    assert packed_a == single_a
    assert packed_b == single_b
    assert single_a.count(b'"id":"111"') == 2  # both rows of the repeated ID
    assert packed_counts_a == single_counts_a == ResultCounts(
        4, {"scrub_geo": 1, "deleted": 1, "suspended": 1, NO_REASON: 1})
    assert packed_counts_b == single_counts_b == ResultCounts(
        2, {"protected": 1, NO_REASON: 1})


def test_count_results_reads_only_the_top_level_reason(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(
        b'{"id":"1","action":"delete","detail":{"reason":"nested"},"reason":"deleted"}\n'
        b'{"id":"2","reason":"deleted","meta":{"reason":"other"}}\n'
        b'{"id":"3","action":"delete","detail":{"reason":"nested"}}\n'
        b'{"id":"4","note":"\\"reason\\":\\"fake\\"","reason":"suspended"}\n'
        + _row("5", "delete", "deleted")
    )
    assert count_results(path) == ResultCounts(
        5, {"deleted": 3, NO_REASON: 1, "suspended": 1})


def test_a_null_or_missing_reason_is_spelt_the_same_in_both_paths(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.write_bytes(_row("1", "delete", None) + b'{"id":"2","action":"delete"}\n'
                    + _row("3", "delete", 7))
    report = normalise_results(raw, tmp_path / "out.jsonl")
    assert report.by_reason == {NO_REASON: 2, "7": 1}
    assert count_results(tmp_path / "out.jsonl") == ResultCounts(3, report.by_reason)
    assert NO_REASON == "(none)"


def test_an_id_in_two_packed_inputs_gets_its_rows_once_per_occurrence(
    tmp_path: Path, split_way: str,
) -> None:
    """A pack uploads a shared ID once per input; X repeats its rows per occurrence. Each
    input must get what its own job would have answered, no more."""
    ids_a, ids_b = tmp_path / "a.ids", tmp_path / "b.ids"
    ids_a.write_bytes(b"444\n111\n")
    ids_b.write_bytes(b"444\n555\n555\n")  # 555 twice in one file: its own job answers twice
    geo, delete = _row("444", "scrub_geo", "scrub_geo"), _row("444", "delete", "deleted")
    other, twice = _row("111", "delete", "deleted"), _row("555", "delete", "suspended")
    results = tmp_path / "packed.jsonl"
    results.write_bytes(geo + delete + other + twice + delete + geo + twice)
    outs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    counts = split_results(results, [(Slice(ids_a), outs[0]), (Slice(ids_b), outs[1])],
                           ResultIndex(tmp_path / "scratch.db"))
    assert outs[0].read_bytes() == geo + delete + other
    assert outs[1].read_bytes() == geo + delete + twice + twice
    assert counts == [ResultCounts(3, {"scrub_geo": 1, "deleted": 2}),
                      ResultCounts(4, {"scrub_geo": 1, "deleted": 1, "suspended": 2})]
