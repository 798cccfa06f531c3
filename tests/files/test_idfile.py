"""ID file validation and normalisation: the bad-input catalogue, block edges, bounded memory."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.errors import InputRejected
from orchestrator.files.idfile import MAX_LINE_BYTES, normalise_id_file, validate_id_file


def run(tmp_path: Path, content: bytes, **kwargs: object):  # type: ignore[no-untyped-def]
    src = tmp_path / "ids.txt"
    src.write_bytes(content)
    return normalise_id_file(src, tmp_path / "ids.upload", **kwargs)  # type: ignore[arg-type]


def rejected(tmp_path: Path, content: bytes, **kwargs: object) -> InputRejected:
    with pytest.raises(InputRejected) as info:
        run(tmp_path, content, **kwargs)
    assert not (tmp_path / "ids.upload").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ids.txt"]  # no temp file left behind
    return info.value


def output(tmp_path: Path) -> bytes:
    return (tmp_path / "ids.upload").read_bytes()


def test_clean_file_is_copied_as_is_with_counts_and_hashes(tmp_path: Path) -> None:
    content = b"".join(b"%d\n" % (10**18 + i) for i in range(50_000)) + b"1\n123\n"
    report = run(tmp_path, content)
    assert output(tmp_path) == content
    assert report.id_count == 50_002
    assert report.bad_line_count == 0 and report.bad_lines == ()
    assert report.input_bytes == report.output_bytes == len(content)
    assert report.input_sha256 == report.output_sha256 == hashlib.sha256(content).hexdigest()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(b"1\r\n22\r\n333\r\n", b"1\n22\n333\n", id="crlf"),
        pytest.param(b"\xef\xbb\xbf1\n2\n", b"1\n2\n", id="bom"),
        pytest.param(b"\xef\xbb\xbf1\r\n2\r\n", b"1\n2\n", id="bom-crlf"),
        pytest.param(b"  1\t\n\t 2  \n3 \r\n", b"1\n2\n3\n", id="spaces-tabs"),
        pytest.param(b"\n\n1\n\n  \n2\n\n", b"1\n2\n", id="blank-lines"),
        pytest.param(b"1\n2", b"1\n2\n", id="no-final-newline"),
        pytest.param(b"9999999999999999999\n", b"9999999999999999999\n", id="19-digits"),
        # As long as the input, yet not the input: its hash must not be reused for the body.
        pytest.param(b"1\n\n2", b"1\n2\n", id="same-length-not-same-bytes"),
        pytest.param(b"12\n345\n6\n" * 3, b"12\n345\n6\n" * 3, id="mixed-widths"),
    ],
)
def test_normalises_harmless_variations(tmp_path: Path, content: bytes, expected: bytes) -> None:
    report = run(tmp_path, content)
    assert output(tmp_path) == expected
    assert report.id_count == expected.count(b"\n")
    assert report.input_sha256 == hashlib.sha256(content).hexdigest()
    assert report.output_sha256 == hashlib.sha256(expected).hexdigest()


@pytest.mark.parametrize(
    ("line", "words", "code"),
    [
        pytest.param(b"12345678901234567890", "20 digits, more than the 19", "too_many_digits",
                     id="20-digits"),
        pytest.param(b"-5", "negative", "negative", id="negative"),
        pytest.param(b"1.5", "decimal", "decimal", id="float"),
        pytest.param(b"1.23457E+18", "exponent notation", "exponent", id="spreadsheet"),
        pytest.param(b"0x1F", "hexadecimal", "hexadecimal", id="hex"),
        pytest.param(b'{"id": "123"}', "JSON", "json", id="json-object"),
        pytest.param(b"[1, 2, 3]", "JSON", "json", id="json-array"),
        pytest.param(b'"123"', "quoted", "quoted", id="quoted"),
        pytest.param(b"123,456", "more than one value", "several_values", id="csv"),
        pytest.param(b"123 456", "more than one value", "several_values", id="two-ids"),
        pytest.param(b"tweet_id", "not a number: 'tweet_id'", "not_a_number", id="header"),
        pytest.param("\uff11\uff12\uff13".encode(), "not a number", "not_a_number",
                     id="fullwidth-digits"),
    ],
)
def test_bad_line_rejects_the_whole_file_naming_line_and_reason(
    tmp_path: Path, line: bytes, words: str, code: str
) -> None:
    error = rejected(tmp_path, b"111\n222\n" + line + b"\n333\n")
    assert error.details["reason"] == "invalid_lines"
    assert error.details["bad_line_count"] == 1
    [bad] = error.details["bad_lines"]
    assert bad["line"] == 3
    assert bad["reason"] == code and words in bad["message"]
    assert len(bad["excerpt"]) <= 41
    assert "ids.txt" in error.message and "line 3" in error.message


def test_reject_message_lists_first_bad_lines_and_counts_all(tmp_path: Path) -> None:
    lines = [b"1", b"x", b"2", b"-3", b"4.0"] + [b"y"] * 30
    error = rejected(tmp_path, b"\n".join(lines) + b"\n", max_reported=3)
    assert error.details["bad_line_count"] == 33
    assert [b["line"] for b in error.details["bad_lines"]] == [2, 4, 5]
    assert "33 invalid lines" in error.message and "first at lines 2, 4, 5;" in error.message


def test_display_name_is_used_in_messages(tmp_path: Path) -> None:
    error = rejected(tmp_path, b"x\n", display_name="customer list.txt")
    assert error.message.startswith("customer list.txt:")


@pytest.mark.parametrize(
    "content", [b"", b"\n\n\n", b"  \r\n\t\n", b"\xef\xbb\xbf", b"\xef\xbb\xbf\r\n"]
)
def test_empty_or_blank_only_file_is_rejected_as_empty(tmp_path: Path, content: bytes) -> None:
    error = rejected(tmp_path, content)
    assert error.details == {"reason": "empty"}
    assert "empty" in error.message


def test_binary_content_is_rejected_with_its_line(tmp_path: Path) -> None:
    # The PNG signature's first line is not UTF-8 either: binary still wins.
    error = rejected(tmp_path, b"1\n2\n\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\n")
    assert error.details == {"reason": "binary", "line": 5}


def test_utf16_file_is_rejected_as_binary_with_a_hint(tmp_path: Path) -> None:
    error = rejected(tmp_path, "123\n456\n".encode("utf-16"))
    assert error.details["reason"] == "binary"
    assert "UTF-16" in error.message


def test_invalid_utf8_is_rejected_with_its_line(tmp_path: Path) -> None:
    error = rejected(tmp_path, b"1\n2\n3\ncaf\xe9\n4\n")
    assert error.details == {"reason": "not_utf8", "line": 4}


def test_binary_wins_over_bad_lines_seen_before_it(tmp_path: Path) -> None:
    error = rejected(tmp_path, b"x\n1\n\x00\n")
    assert error.details["reason"] == "binary"


def test_valid_utf8_text_is_a_bad_line_not_an_encoding_error(tmp_path: Path) -> None:
    # Multi-byte characters cut by a tiny block size must not look like broken UTF-8.
    error = rejected(tmp_path, "1\ncafé ☕ ✓\n2\n".encode(), block_size=3)
    assert error.details["reason"] == "invalid_lines"
    assert error.details["bad_lines"][0]["excerpt"] == "café ☕ ✓"


def test_excerpt_is_short_and_printable(tmp_path: Path) -> None:
    error = rejected(tmp_path, b"abc\x1b[31mdef" + b"z" * 200 + b"\n")
    excerpt = error.details["bad_lines"][0]["excerpt"]
    assert excerpt.isprintable() and "\x1b" not in excerpt
    assert len(excerpt) == 41 and excerpt.endswith("…")


def test_ten_megabyte_single_line_is_rejected_cheaply(tmp_path: Path) -> None:
    src = tmp_path / "ids.txt"
    src.write_bytes(b"7" * (10 * 1024 * 1024))
    tracemalloc.start()
    try:
        with pytest.raises(InputRejected) as info:
            normalise_id_file(src, tmp_path / "out", block_size=64 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.details == {
        "reason": "line_too_long",
        "line": 1,
        "max_line_bytes": MAX_LINE_BYTES,
    }
    assert peak < 3 * 1024 * 1024  # the 10 MB line is never held whole (1 MiB: write buffer)


def test_long_line_is_dropped_under_drop_policy_with_bounded_memory(tmp_path: Path) -> None:
    src = tmp_path / "ids.txt"
    with open(src, "wb") as f:
        f.write(b"1\n")
        f.write(b"8" * (10 * 1024 * 1024) + b"\n")
        f.write(b"2\n")
    tracemalloc.start()
    try:
        report = normalise_id_file(src, tmp_path / "out", policy="drop", block_size=64 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "out").read_bytes() == b"1\n2\n"
    assert report.id_count == 2 and report.bad_line_count == 1
    assert report.bad_lines[0].line_no == 2
    assert report.bad_lines[0].reason == "line_too_long"
    assert f"longer than {MAX_LINE_BYTES} bytes" in report.bad_lines[0].message
    assert peak < 3 * 1024 * 1024


def test_binary_inside_an_overlong_line_is_still_binary(tmp_path: Path) -> None:
    content = b"1\n" + b"a" * (3 * MAX_LINE_BYTES) + b"\x00" + b"\n2\n"
    error = rejected(tmp_path, content, policy="drop", block_size=1024)
    assert error.details == {"reason": "binary", "line": 2}


def test_drop_policy_keeps_good_lines_and_reports_bad_ones(tmp_path: Path) -> None:
    report = run(tmp_path, b"1\n-2\n3\n12345678901234567890\n4\n", policy="drop", max_reported=1)
    assert output(tmp_path) == b"1\n3\n4\n"
    assert report.id_count == 3
    assert report.bad_line_count == 2
    assert [b.line_no for b in report.bad_lines] == [2]
    assert report.output_sha256 == hashlib.sha256(b"1\n3\n4\n").hexdigest()


def test_drop_policy_still_rejects_when_no_valid_id_remains(tmp_path: Path) -> None:
    error = rejected(tmp_path, b"-1\nabc\n\n", policy="drop")
    assert error.details["reason"] == "invalid_lines"
    assert error.details["bad_line_count"] == 2
    assert "no valid ID left" in error.message


def test_drop_policy_still_rejects_binary_and_empty(tmp_path: Path) -> None:
    assert rejected(tmp_path, b"1\n\x00\n", policy="drop").details["reason"] == "binary"
    assert rejected(tmp_path, b"\n", policy="drop").details["reason"] == "empty"


def test_dest_is_replaced_atomically(tmp_path: Path) -> None:
    (tmp_path / "ids.upload").write_bytes(b"old\n")
    run(tmp_path, b"5\n")
    assert output(tmp_path) == b"5\n"
    with pytest.raises(InputRejected):
        run(tmp_path, b"x\n")
    assert output(tmp_path) == b"5\n"  # a rejected run leaves an existing dest alone


# --- block edges: the bulk path and the line path must agree, wherever blocks split -----

_GOOD = st.integers(0, 10**19 - 1).map(lambda n: str(n).encode())
_DECORATED = st.tuples(
    st.sampled_from([b"", b" ", b"\t", b"  \t"]), _GOOD, st.sampled_from([b"", b" ", b"\r"])
).map(b"".join)
_BAD = st.sampled_from(
    [b"12345678901234567890", b"-5", b"1.5", b"abc", "é1".encode(), b"0x10", b"1 2"]
)
_LINE = st.one_of(_GOOD, _GOOD, _GOOD, _DECORATED, st.just(b""), st.just(b"  "), _BAD)


def reference(lines: list[bytes]) -> tuple[bytes, list[int]]:
    """Line-at-a-time model: the IDs kept and the numbers of the bad lines."""
    kept, bad = [], []
    for number, line in enumerate(lines, 1):
        value = line.strip()
        if not value:
            continue
        if value.isdigit() and value.isascii() and len(value) <= 19:
            kept.append(value + b"\n")
        else:
            bad.append(number)
    return b"".join(kept), bad


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(_LINE, max_size=40),
    eol=st.sampled_from([b"\n", b"\r\n"]),
    final_eol=st.booleans(),
    bom=st.booleans(),
    block_size=st.integers(1, 80),
)
def test_any_block_size_gives_the_line_by_line_result(
    tmp_path_factory: pytest.TempPathFactory,
    lines: list[bytes],
    eol: bytes,
    final_eol: bool,
    bom: bool,
    block_size: int,
) -> None:
    tmp_path = tmp_path_factory.mktemp("blocks")
    content = (b"\xef\xbb\xbf" if bom else b"") + eol.join(lines) + (eol if final_eol else b"")
    parsed = content.removeprefix(b"\xef\xbb\xbf").split(b"\n")
    if parsed and parsed[-1] == b"":
        parsed.pop()
    expected, bad = reference(parsed)
    src = tmp_path / "in"
    src.write_bytes(content)
    try:
        report = normalise_id_file(src, tmp_path / "out", policy="drop", block_size=block_size)
    except InputRejected as error:
        assert not expected
        assert error.details["reason"] == ("invalid_lines" if bad else "empty")
        return
    assert (tmp_path / "out").read_bytes() == expected
    assert report.output_sha256 == hashlib.sha256(expected).hexdigest()
    assert report.input_sha256 == hashlib.sha256(content).hexdigest()
    assert report.id_count == expected.count(b"\n")
    assert report.bad_line_count == len(bad)
    assert [b.line_no for b in report.bad_lines] == bad[:10]


def test_fifo_or_symlink_swapped_in_is_rejected_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "target").write_bytes(b"1\n")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    for name in ("fifo", "link"):
        with pytest.raises(InputRejected) as info:
            normalise_id_file(tmp_path / name, tmp_path / "out")
        assert info.value.details == {"reason": "not_a_file"}
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "is_input"),
    [
        pytest.param(b"1\n22\n333\n", True, id="clean"),
        pytest.param(b"1\r\n2\r\n", False, id="crlf"),
        pytest.param(b"1\n\n2\n", False, id="blank-line"),
        pytest.param(b"1\n2", False, id="no-final-newline"),
        pytest.param(b"\xef\xbb\xbf1\n2\n", False, id="bom"),
        pytest.param(b" 1\n2\n", False, id="space"),
    ],
)
def test_validate_writes_a_copy_only_when_the_body_is_not_the_input(
    tmp_path: Path, content: bytes, is_input: bool
) -> None:
    src, dest = tmp_path / "in.txt", tmp_path / "out.ids"
    src.write_bytes(content)
    report = validate_id_file(src, dest)
    assert report.body_is_input is is_input
    assert dest.exists() is not is_input
    body = content if is_input else dest.read_bytes()
    expected = normalise_id_file(src, tmp_path / "reference.ids")
    assert body == (tmp_path / "reference.ids").read_bytes()
    assert report.output_sha256 == expected.output_sha256 == hashlib.sha256(body).hexdigest()
    assert (report.id_count, report.input_sha256) == (expected.id_count, expected.input_sha256)
    assert (report.output_sha256 == report.input_sha256) is is_input


def test_validate_rejects_like_normalise_and_writes_nothing(tmp_path: Path) -> None:
    src, dest = tmp_path / "in.txt", tmp_path / "out.ids"
    src.write_bytes(b"1\nx\n")
    with pytest.raises(InputRejected) as caught:
        validate_id_file(src, dest)
    assert caught.value.details["reason"] == "invalid_lines"
    assert not dest.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]
