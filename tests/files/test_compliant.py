"""The compliant copy of a JSON Lines input: deleted objects gone, geo scrubbed where that is
X's only reason, everything else byte for byte, pages rewritten, in the input's order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.files.compliant import CopyCounts, write_compliant_copy
from orchestrator.store.scratch import ReasonIndex


def tweet(tweet_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": tweet_id, "text": "hi", "geo": {"place_id": "01a9a39529b27f36"}, **extra}


def results(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"id": i, "action": "delete",
                                        "created_at": "2026-01-01T00:00:00.000Z",
                                        "reason": r}) + "\n\n" for i, r in rows))
    return path


def copy(tmp_path: Path, lines: list[bytes], rows: list[tuple[str, str]]) -> tuple[
        list[bytes], CopyCounts]:
    src = tmp_path / "archive.jsonl"
    src.write_bytes(b"".join(line + b"\n" for line in lines))
    dest = tmp_path / "archive.compliant.jsonl"
    with ReasonIndex(tmp_path / "reasons.db") as index:
        counts = write_compliant_copy(src, results(tmp_path / "r.jsonl", rows), dest, index)
    assert not (tmp_path / "reasons.db").exists()
    return dest.read_bytes().splitlines(), counts


def test_flattened_objects(tmp_path: Path) -> None:
    untouched = b'{"text": "spaces and order kept", "id": "1", "geo": {}}'
    lines = [untouched, json.dumps(tweet("2")).encode(), json.dumps(tweet("3")).encode(),
             json.dumps(tweet("4")).encode()]
    out, counts = copy(tmp_path, lines, [("2", "deleted"), ("3", "scrub_geo"),
                                         ("4", "scrub_geo"), ("4", "suspended")])
    assert out[0] == untouched
    assert [json.loads(line) for line in out[1:]] == [{"id": "3", "text": "hi"}]
    assert counts == CopyCounts(objects=4, removed=2, scrubbed=1, skipped_lines=0)


def test_pages_lose_affected_objects_and_keep_the_rest(tmp_path: Path) -> None:
    page = {"data": [tweet("10"), tweet("11"), tweet("12")],
            "includes": {"tweets": [tweet("11")], "users": [{"id": "7"}]},
            "meta": {"result_count": 3}}
    lookup = {"data": tweet("13")}
    out, counts = copy(tmp_path, [json.dumps(page).encode(), json.dumps(lookup).encode(),
                                  b"not json", b""],
                       [("11", "deleted"), ("12", "scrub_geo"), ("13", "protected")])
    first, second = (json.loads(line) for line in out)
    assert [t["id"] for t in first["data"]] == ["10", "12"]
    assert "geo" in first["data"][0] and "geo" not in first["data"][1]
    assert first["includes"] == {"tweets": [], "users": [{"id": "7"}]}
    assert first["meta"] == {"result_count": 3}
    assert second == {}
    assert counts == CopyCounts(objects=4, removed=2, scrubbed=1, skipped_lines=1)


def test_many_blocks_in_order(tmp_path: Path) -> None:
    lines = [json.dumps(tweet(str(n))).encode() for n in range(1, 20_001)]
    out, counts = copy(tmp_path, lines, [(str(n), "deleted") for n in range(1, 20_001, 3)])
    kept = [json.loads(line)["id"] for line in out]
    assert kept == [str(n) for n in range(1, 20_001) if (n - 1) % 3]
    assert counts.removed == 6667
