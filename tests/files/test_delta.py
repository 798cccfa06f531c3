"""Deltas between two deliveries of a dataset, against a brute-force in-memory diff, with runs
small enough that every merge path is taken."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.files.delta import DeltaCounts, sort_ids, sort_rows, write_delta

REASONS = ["deleted", "suspended", "protected", "deactivated", "scrub_geo"]


def row(tweet_id: int, reason: str) -> bytes:
    action = "scrub_geo" if reason == "scrub_geo" else "delete"
    return json.dumps({"id": str(tweet_id), "action": action,
                       "created_at": "2026-01-01T00:00:00.000Z", "reason": reason},
                      separators=(",", ":")).encode()


Verdicts = dict[int, tuple[str, ...]]  # X may answer one ID with two rows


def delta(tmp: Path, prev: Verdicts | None, cur: Verdicts, listed: set[int],
          per_run: int) -> tuple[list[dict[str, object]], DeltaCounts]:
    def results(name: str, rows: Verdicts) -> Path:
        path = tmp / f"{name}.jsonl"
        # Delivered in X's order, not sorted; a blank line as X's files have them.
        path.write_bytes(b"".join(row(i, r) + b"\n" for i, rs in reversed(rows.items())
                                  for r in rs) + b"\n")
        return path

    prev_sorted = None
    if prev is not None:
        prev_sorted = tmp / "prev.sorted"
        assert sort_rows(results("prev", prev), prev_sorted, tmp, per_run) == sum(
            map(len, prev.values()))
    cur_sorted = tmp / "cur.sorted"
    sort_rows(results("cur", cur), cur_sorted, tmp, per_run)
    ids = tmp / "cur.ids"
    ids.write_bytes(b"".join(b"%d\n" % i for i in sorted(listed, reverse=True)))
    keys = tmp / "cur.keys"
    sort_ids(ids, keys, tmp, per_run)
    out = tmp / "delta.jsonl"
    counts = write_delta(prev_sorted, cur_sorted, keys, out)
    assert not [p for p in tmp.iterdir() if p.name.startswith(".")]  # no run left behind
    return [json.loads(line) for line in out.read_bytes().splitlines()], counts


def brute_force(prev: Verdicts, cur: Verdicts, listed: set[int]) -> list[object]:
    def rows(i: int, reasons: tuple[str, ...]) -> list[object]:
        return sorted((json.loads(row(i, r)) for r in reasons), key=json.dumps)

    expected: list[tuple[int, object]] = []
    for i in set(prev) | set(cur):
        if i in cur and i not in prev:
            expected.append((i, {"change": "new", "id": str(i), "rows": rows(i, cur[i])}))
        elif i in cur and sorted(prev[i]) != sorted(cur[i]):
            expected.append((i, {"change": "changed", "id": str(i), "rows": rows(i, cur[i]),
                                 "previous": rows(i, prev[i])}))
        elif i not in cur and i in listed:
            expected.append((i, {"change": "reversed", "id": str(i),
                                 "previous": rows(i, prev[i])}))
    return [entry for _, entry in sorted(expected, key=lambda pair: pair[0])]


def normalised(got: list[dict[str, object]]) -> list[object]:
    for entry in got:
        for field in ("rows", "previous"):
            if field in entry:
                entry[field] = sorted(entry[field], key=json.dumps)  # type: ignore[arg-type]
    return list(got)


ids = st.integers(1, 2**63 - 1) | st.integers(1, 200)  # small ones: keys of other lengths
reasons = st.lists(st.sampled_from(REASONS), min_size=1, max_size=2, unique=True).map(tuple)
verdicts = st.dictionaries(ids, reasons, max_size=40)


@settings(max_examples=80, deadline=None)
@given(verdicts, verdicts, st.sets(ids, max_size=40), st.sampled_from([1, 3, 1000]))
def test_delta_equals_a_brute_force_diff(
    tmp_path_factory: pytest.TempPathFactory, prev: Verdicts, cur: Verdicts,
    extra: set[int], per_run: int,
) -> None:
    tmp = tmp_path_factory.mktemp("delta")
    # Every current row's ID is in the current input; some earlier ones are too.
    listed = set(cur) | {i for i in prev if i % 2} | extra
    got, counts = delta(tmp, prev, cur, listed, per_run)
    assert normalised(got) == brute_force(prev, cur, listed)
    assert counts.new + counts.changed + counts.reversed == len(got)
    assert counts.not_rechecked == len([i for i in prev if i not in cur and i not in listed])
    assert counts.unchanged == len([i for i in prev if i in cur
                                    and sorted(cur[i]) == sorted(prev[i])])


def test_a_first_delivery_lists_every_row_as_new(tmp_path: Path) -> None:
    got, counts = delta(tmp_path, None, {5: ("deleted",), 3: ("protected",)}, {3, 5, 9}, 1)
    assert [entry["change"] for entry in got] == ["new", "new"]
    assert [entry["id"] for entry in got] == ["3", "5"]
    assert counts == DeltaCounts(new=2)


def test_rows_are_kept_verbatim(tmp_path: Path) -> None:
    odd = b'{"id":"7","action":"delete","created_at":"2019-03-02T03:37:59+00:00",' \
          b'"redacted_at":"2021-06-15T07:32:10+00:00","reason":"deleted"}'
    results = tmp_path / "r.jsonl"
    results.write_bytes(odd + b"\n")
    sort_rows(results, tmp_path / "r.sorted", tmp_path)
    (tmp_path / "i.ids").write_bytes(b"7\n")
    sort_ids(tmp_path / "i.ids", tmp_path / "i.keys", tmp_path)
    write_delta(None, tmp_path / "r.sorted", tmp_path / "i.keys", tmp_path / "d.jsonl")
    assert (tmp_path / "d.jsonl").read_bytes() == (
        b'{"change":"new","id":"7","rows":[' + odd + b"]}\n")
