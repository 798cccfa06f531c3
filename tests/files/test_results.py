"""Downloaded result files -> the outbox's normalised JSON Lines."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.errors import IntegrityError, RetryableError
from orchestrator.files.results import ResultStream, iter_results, normalise_results

# Verbatim shapes of real downloads (x-compliance-api.md §4), blank line included.
TWEETS = (
    b'{"id":"1160164553482756096","action":"delete","created_at":"2019-08-10T12:22:39.022Z",'
    b'"reason":"suspended"}\n'
    b'{"id":"1164946045643759617","action":"delete","created_at":"2019-08-23T17:02:35.589Z",'
    b'"reason":"suspended"}\n'
    b"\n"
    b'{"id":"1162878716252495872","action":"delete","created_at":"2019-08-18T00:07:45.853Z",'
    b'"reason":"suspended"}\n'
)
USERS = (
    b'{"id":"1101688072863993857","action":"delete","created_at":"2019-03-02T03:37:59+00:00",'
    b'"redacted_at":"2021-06-15T07:32:10+00:00","reason":"deleted"}\n'
    b'{"id":"829985394590629888","action":"delete","created_at":"2017-02-10T09:28:33+00:00",'
    b'"reason":"suspended"}\n'
    b"\n"
    b'{"id":"403485611","action":"delete","created_at":"2011-11-02T15:26:18+00:00",'
    b'"redacted_at":"2021-02-21T18:01:36+00:00","reason":"deleted"}'  # no final newline
)


def normalise(tmp_path: Path, content: bytes):  # type: ignore[no-untyped-def]
    raw = tmp_path / "raw.jsonl"
    raw.write_bytes(content)
    return normalise_results(raw, tmp_path / "out.jsonl")


def test_recorded_tweet_results_keep_lines_and_drop_blanks(tmp_path: Path) -> None:
    report = normalise(tmp_path, TWEETS)
    out = (tmp_path / "out.jsonl").read_bytes()
    assert out == TWEETS.replace(b"\n\n", b"\n")
    assert report.affected == 3 and report.blank_lines == 1
    assert report.by_reason == {"suspended": 3}
    assert report.output_bytes == len(out)
    assert report.output_sha256 == hashlib.sha256(out).hexdigest()


def test_recorded_user_results_with_both_timestamp_styles(tmp_path: Path) -> None:
    report = normalise(tmp_path, USERS)
    rows = list(iter_results(tmp_path / "out.jsonl"))
    assert [r["id"] for r in rows] == ["1101688072863993857", "829985394590629888", "403485611"]
    assert rows[0]["created_at"] == "2019-03-02T03:37:59+00:00"  # never rewritten
    assert "redacted_at" not in rows[1]
    assert report.by_reason == {"deleted": 2, "suspended": 1}
    assert (tmp_path / "out.jsonl").read_bytes().endswith(b"}\n")


def test_other_shapes_are_made_compact_with_values_and_order_kept(tmp_path: Path) -> None:
    content = (
        '{ "reason" : "bounced", "id" : "42", "extra": {"b": 1, "a": [1, 2]},'
        ' "note": "café ☕", "created_at": "2026-01-01T00:00:00.000Z" }\r\n'
        '{"id":"7","action":"delete","created_at":"x","reason":"edited\\u0000"}\n'
        '{"id":"8","action":"delete","created_at":"2020-01-01T00:00:00Z"}\n'
        "   \t\r\n"
    ).encode()
    report = normalise(tmp_path, content)
    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    assert lines[0] == (
        '{"reason":"bounced","id":"42","extra":{"b":1,"a":[1,2]},"note":"café ☕",'
        '"created_at":"2026-01-01T00:00:00.000Z"}'
    )
    assert lines[1] == '{"id":"7","action":"delete","created_at":"x","reason":"edited\\u0000"}'
    assert report.by_reason == {"bounced": 1, "edited\x00": 1, "(none)": 1}
    assert report.affected == 3 and report.blank_lines == 1


def test_empty_download_means_all_compliant(tmp_path: Path) -> None:
    report = normalise(tmp_path, b"\n\n")
    assert (tmp_path / "out.jsonl").read_bytes() == b""
    assert report.affected == 0 and report.by_reason == {} and report.blank_lines == 2


@pytest.mark.parametrize(
    ("bad_line", "words"),
    [
        pytest.param(b'{"id":"1","action":"del', "not valid JSON", id="truncated"),
        pytest.param(b"[1,2]", "not a JSON object", id="array"),
        pytest.param(b'"1"', "not a JSON object", id="string"),
        pytest.param(b'{"action":"delete"}', '"id"', id="no-id"),
        pytest.param(b'{"id":123}', '"id"', id="numeric-id"),
        pytest.param(b'{"id":"12a"}', '"id"', id="non-digit-id"),
        pytest.param(b'{"id":"1","x":"\xff"}', "not UTF-8", id="bad-utf8"),
        pytest.param(
            b"<?xml version='1.0'?><Error><Code>NoSuchKey</Code></Error>",
            "JSON",
            id="gcs-error-body",
        ),
    ],
)
def test_corrupt_line_is_an_integrity_error_naming_the_line(
    tmp_path: Path, bad_line: bytes, words: str
) -> None:
    (tmp_path / "out.jsonl").write_bytes(b"previous\n")
    with pytest.raises(IntegrityError) as info:
        normalise(tmp_path, TWEETS + bad_line + b"\n")
    assert "line 5" in str(info.value) and words in str(info.value)
    assert isinstance(info.value, RetryableError)  # a corrupt download is fetched again
    # Nothing was delivered: the old file is intact and no temp file is left.
    assert (tmp_path / "out.jsonl").read_bytes() == b"previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "raw.jsonl"]


def test_absurdly_long_line_is_an_integrity_error(tmp_path: Path) -> None:
    with pytest.raises(IntegrityError, match="line 2 is longer"):
        normalise(tmp_path, TWEETS.split(b"\n")[0] + b"\n" + b"x" * (2 * 1024 * 1024))


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_VALUE = st.one_of(_TEXT, st.integers(), st.none(), st.booleans())


@settings(max_examples=200, deadline=None)
@given(
    ident=st.integers(0, 10**19 - 1),
    reason=_TEXT,
    created=_TEXT,
    redacted=st.none() | _TEXT,
    extra=st.dictionaries(st.sampled_from(["note", "edit", "z"]), _VALUE, max_size=2),
)
def test_fast_copy_and_parsed_path_agree(
    tmp_path_factory: pytest.TempPathFactory,
    ident: int,
    reason: str,
    created: str,
    redacted: str | None,
    extra: dict[str, object],
) -> None:
    """Whatever the line, the output is exactly json.dumps(json.loads(line)), compact."""
    obj: dict[str, object] = {"id": str(ident), "action": "delete", "created_at": created}
    if redacted is not None:
        obj["redacted_at"] = redacted
    obj["reason"] = reason
    obj.update(extra)
    line = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    tmp_path = tmp_path_factory.mktemp("res")
    report = normalise(tmp_path, line.encode() + b"\n")
    assert (tmp_path / "out.jsonl").read_bytes() == line.encode() + b"\n"
    assert report.by_reason == {reason: 1}


# -- ResultStream: the same normalising, fed as the bytes arrive ------------------------------


def _x_lines(count: int) -> bytes:
    return b"".join(
        b'{"id":"%d","action":"delete","created_at":"2019-08-10T12:22:39.022Z",'
        b'"reason":"%s"}\n' % (1160164553482756096 + n, b"suspended" if n % 3 else b"deleted")
        + (b"\n" if n % 997 == 0 else b"")
        for n in range(count)
    )


@pytest.mark.parametrize("piece", [1, 7, 4096, 65537, 1 << 20])
def test_a_stream_fed_in_any_pieces_writes_what_normalising_the_file_writes(
    tmp_path: Path, piece: int
) -> None:
    body = _x_lines(5000 if piece > 1 else 300) + USERS  # ends without a newline
    expected = normalise(tmp_path, body)
    stream = ResultStream(tmp_path / "streamed.jsonl")
    stream.begin()
    for at in range(0, len(body), piece):
        stream.feed(body[at : at + piece])
    assert not (tmp_path / "streamed.jsonl").exists()
    assert stream.finish() == expected
    assert (tmp_path / "streamed.jsonl").read_bytes() == (tmp_path / "out.jsonl").read_bytes()


@pytest.mark.parametrize("piece", [4096, 65537, 1 << 20])
def test_a_bad_row_inside_a_block_is_named_by_its_line(tmp_path: Path, piece: int) -> None:
    lines = _x_lines(8000).split(b"\n")
    bad = 6001  # 0-based: line 6002, deep inside a block of X's shape
    lines[bad] = lines[bad].replace(b'"id":"', b'"id":', 1)
    body = b"\n".join(lines)
    stream = ResultStream(tmp_path / "streamed.jsonl")
    stream.begin()
    with pytest.raises(IntegrityError, match=f"result line {bad + 1} "):
        for at in range(0, len(body), piece):
            stream.feed(body[at : at + piece])
    stream.abort()
    assert list(tmp_path.iterdir()) == []  # the temp file is gone


def test_beginning_again_discards_what_was_fed(tmp_path: Path) -> None:
    stream = ResultStream(tmp_path / "streamed.jsonl")
    stream.begin()
    stream.feed(TWEETS[:100])
    stream.begin()  # a download that could not resume starts over from byte 0
    stream.feed(TWEETS)
    report = stream.finish()
    assert (tmp_path / "streamed.jsonl").read_bytes() == TWEETS.replace(b"\n\n", b"\n")
    assert report.affected == 3 and [p.name for p in tmp_path.iterdir()] == ["streamed.jsonl"]
