"""JSON Lines and CSV/TSV inputs read as IDs: the shapes twarc2 and the API write, bad rows
with their line numbers, block edges, and the same upload body as a plain ID list."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.errors import InputRejected
from orchestrator.files.idfile import IdFileReport
from orchestrator.files.records import detect_format, extract_ids


def run(tmp_path: Path, content: bytes, fmt: str = "jsonl", **kwargs: Any) -> IdFileReport:
    src = tmp_path / f"input.{fmt}"
    src.write_bytes(content)
    return extract_ids(src, tmp_path / "input.upload", fmt, **kwargs)  # type: ignore[arg-type]


def rejected(tmp_path: Path, content: bytes, fmt: str = "jsonl", **kwargs: Any) -> InputRejected:
    with pytest.raises(InputRejected) as info:
        run(tmp_path, content, fmt, **kwargs)
    assert not (tmp_path / "input.upload").exists()
    return info.value


def body(tmp_path: Path) -> bytes:
    return (tmp_path / "input.upload").read_bytes()


def lines(*objects: object) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objects)


def tweet(tweet_id: str, **extra: Any) -> dict[str, Any]:
    # Nested `id`s (mentions, referenced tweets) must not be taken for the object's own.
    return {"author_id": "2244994945", "text": "hi @x",
            "entities": {"mentions": [{"start": 3, "end": 5, "username": "x", "id": "99"}]},
            "referenced_tweets": [{"type": "quoted", "id": "98"}], "id": tweet_id, **extra}


def test_flattened_objects_give_their_own_ids_in_order(tmp_path: Path) -> None:
    content = lines(*(tweet(str(10**18 + i)) for i in range(1000)))
    report = run(tmp_path, content)
    expected = b"".join(b"%d\n" % (10**18 + i) for i in range(1000))
    assert body(tmp_path) == expected
    assert report.id_count == 1000
    assert report.bad_line_count == 0
    assert report.input_sha256 == hashlib.sha256(content).hexdigest()
    assert report.output_sha256 == hashlib.sha256(expected).hexdigest()
    assert report.input_bytes == len(content)


def test_response_pages_give_every_data_id_and_error_pages_none(tmp_path: Path) -> None:
    content = lines(
        {"data": [tweet("11"), tweet("12")], "includes": {"users": [{"id": "7"}]},
         "meta": {"result_count": 2}, "__twarc": {"version": "2.14"}},
        {"data": tweet("13")},  # a single-object lookup response
        {"errors": [{"resource_id": "14", "title": "Not Found Error"}]},
        {"data": [], "meta": {"result_count": 0}},
        {"id": 15, "username": "someone"},  # a user object with a numeric id
    )
    report = run(tmp_path, content)
    assert body(tmp_path) == b"11\n12\n13\n15\n"
    assert report.id_count == 4


def test_blank_lines_bom_and_a_last_line_without_newline(tmp_path: Path) -> None:
    content = b"\xef\xbb\xbf" + lines(tweet("1")) + b"\n  \n" + json.dumps(tweet("2")).encode()
    run(tmp_path, content)
    assert body(tmp_path) == b"1\n2\n"


@pytest.mark.parametrize(
    ("line", "reason", "code"),
    [
        (b'{"id": "12a"}', "hexadecimal", "hexadecimal"),
        (b'{"id": "1.5e18"}', "exponent notation", "exponent"),
        (b'{"id": ""}', "empty id", "empty_id"),
        (b'{"id": true}', "not a Tweet/User object", "not_a_record"),
        (b'{"id": -5}', "not a positive 64-bit ID", "out_of_range"),
        (b'{"text": "no id here"}', "no `id`, `data` or `errors`", "no_id"),
        (b'{"id": "1"', "not JSON", "not_json"),
        (b"[1, 2]", "not a Tweet/User object", "not_a_record"),
        (b'{"data": [{"id": "123456789012345678901"}]}', "21 digits", "too_many_digits"),
    ],
)
def test_a_bad_row_is_named_by_its_line(
    tmp_path: Path, line: bytes, reason: str, code: str
) -> None:
    content = lines(tweet("1"), tweet("2")) + line + b"\n" + lines(tweet("3"))
    error = rejected(tmp_path, content)
    assert error.details["reason"] == "invalid_lines"
    (bad,) = error.details["bad_lines"]
    assert bad["line"] == 3
    assert bad["reason"] == code and reason in bad["message"]
    assert "line 3" in str(error)
    assert "input.jsonl" in str(error)


def test_drop_policy_leaves_bad_rows_out_and_reports_them(tmp_path: Path) -> None:
    content = lines(tweet("1"), {"nope": 1}, tweet("2"))
    report = run(tmp_path, content, policy="drop")
    assert body(tmp_path) == b"1\n2\n"
    assert [b.line_no for b in report.bad_lines] == [2]


def test_an_over_long_line_is_refused_not_buffered(tmp_path: Path) -> None:
    huge = b'{"id": "1", "text": "' + b"x" * (17 * 2**20) + b'"}\n'
    error = rejected(tmp_path, lines(tweet("1")) + huge)
    assert error.details["reason"] == "line_too_long"
    assert error.details["line"] == 2


def test_no_id_at_all_is_empty(tmp_path: Path) -> None:
    error = rejected(tmp_path, lines({"errors": [{"title": "Not Found Error"}]}))
    assert error.details["reason"] == "empty"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.integers(1, 2**63 - 1).map(lambda n: ("ok", n)),
            st.sampled_from([b'{"id": "x1"}', b"{", b'{"idd": 1}', b""]).map(
                lambda raw: ("raw", raw)
            ),
        ),
        min_size=1,
        max_size=60,
    ),
    st.sampled_from([7, 64, 300, 4096]),
)
def test_line_numbers_and_ids_survive_any_block_boundary(
    tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[str, Any]], block_size: int
) -> None:
    tmp_path = tmp_path_factory.mktemp("blocks")
    content = bytearray()
    want_ids: list[bytes] = []
    want_bad: list[int] = []
    for line_no, (kind, value) in enumerate(rows, start=1):
        if kind == "ok":
            content += json.dumps(tweet(str(value))).encode() + b"\n"
            want_ids.append(b"%d" % value)
        else:
            content += value + b"\n"
            if value:
                want_bad.append(line_no)
    if not want_ids and not want_bad:
        return
    if want_bad or not want_ids:
        with pytest.raises(InputRejected) as info:
            run(tmp_path, bytes(content), block_size=block_size, max_reported=100)
        if want_bad:
            got = [b["line"] for b in info.value.details["bad_lines"]]
            assert got == want_bad
        return
    run(tmp_path, bytes(content), block_size=block_size)
    assert body(tmp_path) == b"".join(i + b"\n" for i in want_ids)


# -- CSV / TSV -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "sep"),
    [("tweet_id", ","), ("id", ","), ("User_ID", ","), ("tweet_id", "\t"), ("tweet_id", ";")],
)
def test_csv_reads_the_id_column_by_its_header(tmp_path: Path, header: str, sep: str) -> None:
    content = sep.join(["created_at", header, "text"]) + "\n"
    content += sep.join(["2026-01-01", "101", '"hello, world"']) + "\n"
    content += sep.join(["2026-01-02", "102", "bye"]) + "\n"
    report = run(tmp_path, content.encode(), "csv")
    assert body(tmp_path) == b"101\n102\n"
    assert report.id_count == 2


def test_csv_configured_column_quoted_newlines_and_line_numbers(tmp_path: Path) -> None:
    content = (
        b"status,StatusID\n"
        b'"a\nmulti-line text",201\n'
        b"b,1.23E+18\n"
        b"c,203\n"
    )
    error = rejected(tmp_path, content, "csv", id_columns=("statusid",))
    (bad,) = error.details["bad_lines"]
    assert bad["line"] == 4  # the header, a record over lines 2-3, then this one
    assert bad["reason"] == "exponent" and "exponent notation" in bad["message"]


def test_csv_without_an_id_column_names_what_it_found(tmp_path: Path) -> None:
    error = rejected(tmp_path, b"name,text\nx,y\n", "csv")
    assert error.details["reason"] == "no_id_column"
    assert "'name', 'text'" in str(error)
    assert "'tweet_id'" in str(error)


def test_csv_short_rows_and_not_utf8(tmp_path: Path) -> None:
    error = rejected(tmp_path, b"text,id\nonly-text\n", "csv")
    assert error.details["bad_lines"][0]["line"] == 2
    assert error.details["bad_lines"][0]["reason"] == "no_id"
    assert "no value in the id column" in error.details["bad_lines"][0]["message"]
    error = rejected(tmp_path, b"id\n1\n\xff\xfe\n", "csv")
    assert error.details["reason"] == "not_utf8"


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (b'{"id": "1"}\n', "jsonl"),
        (b'\xef\xbb\xbf\n  {"data": []}\n', "jsonl"),
        (b"123\n456\n", "ids"),
        (b"tweet_id\n123\n", "csv"),
        (b'"created_at","user_id"\n', "csv"),
        (b"a\tID\tb\n", "csv"),
        (b"hello\n", "ids"),  # not a header we know: the ID checks explain it
        (b"1.2e18\n", "ids"),
    ],
)
def test_format_is_detected_from_content(head: bytes, fmt: str) -> None:
    assert detect_format(head) == fmt
