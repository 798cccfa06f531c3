"""JSON Lines (as twarc2 writes them) and CSV exports end to end through the sandbox: the
results are those of their IDs, bad rows are rejected with their line numbers as ID files are,
and the compliant copy is the input minus what X says to delete."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from daemon_helpers import drained, drop, load, make_ids, read_results, running_service
from resilience_helpers import write_config_ex

from orchestrator.sandbox import Sandbox


def tweet(tweet_id: str) -> dict[str, Any]:
    return {"id": tweet_id, "text": "stored text", "author_id": "2244994945",
            "geo": {"place_id": "01a9a39529b27f36"},
            "referenced_tweets": [{"type": "quoted", "id": "1"}]}


async def test_jsonl_pages_and_csv_are_checked_like_id_lists(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    flat_ids, page_ids, csv_ids = make_ids(61, 40), make_ids(62, 60), make_ids(63, 30)
    flat = b"".join(json.dumps(tweet(i)).encode() + b"\n" for i in flat_ids)
    pages = b"".join(
        json.dumps({"data": [tweet(i) for i in page_ids[n:n + 20]],
                    "meta": {"result_count": 20}, "__twarc": {"version": "2.14.0"}}).encode()
        + b"\n" for n in range(0, 60, 20))
    csv = ("created_at,tweet_id,text\n" + "".join(
        f'2026-01-01,{i},"a, b"\n' for i in csv_ids)).encode()
    config = load(write_config_ex(tmp_path, sandbox.base_url,
                                  extra={"outputs": {"compliant_copy": True}}))
    async with running_service(config) as service:
        drop(tmp_path, "tweets", "flat.jsonl", flat)
        drop(tmp_path, "tweets", "search.jsonl", pages)
        drop(tmp_path, "tweets", "export.csv", csv)
        await drained(service)
    for stem, ids in (("flat", flat_ids), ("search", page_ids), ("export", csv_ids)):
        assert read_results(tmp_path, "tweets", stem) == sandbox.expected_results("tweets", ids)
    # The compliant copy: every object X listed for deletion gone, scrub_geo ones without geo.
    expected = sandbox.expected_results("tweets", flat_ids)
    assert expected, "the seed lists some of these IDs"
    kept = [json.loads(line) for line in
            (tmp_path / "outbox/tweets/flat.compliant.jsonl").read_bytes().splitlines()]
    want = []
    for tweet_id in flat_ids:
        row = expected.get(tweet_id)
        if row is None:
            want.append(tweet(tweet_id))
        elif row["reason"] == "scrub_geo":
            want.append({k: v for k, v in tweet(tweet_id).items() if k != "geo"})
    assert kept == want
    manifest = json.loads((tmp_path / "outbox/tweets/flat.manifest.json").read_text())
    assert manifest["compliant_copy"]["removed"] == len(flat_ids) - len(want)
    assert not (tmp_path / "outbox/tweets/export.compliant.jsonl").exists()  # CSV: no objects


async def test_a_bad_row_rejects_the_file_naming_its_line(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    lines = [json.dumps(tweet(i)).encode() for i in make_ids(64, 10)]
    lines[6] = b'{"id": "1.5e18", "text": "a spreadsheet was here"}'
    config = load(write_config_ex(tmp_path, sandbox.base_url))
    async with running_service(config) as service:
        drop(tmp_path, "tweets", "archive.jsonl", b"\n".join(lines) + b"\n")
        drop(tmp_path, "tweets", "nocolumn.csv", b"name,text\nx,y\n")
        await drained(service)
    record = json.loads((tmp_path / "outbox/rejected/archive.jsonl.error.json").read_text())
    assert record["reason"] == "invalid_lines"
    assert "line 7" in record["message"] and "exponent notation" in record["message"]
    assert (tmp_path / "outbox/rejected/archive.jsonl").exists()
    assert not sandbox.jobs()
