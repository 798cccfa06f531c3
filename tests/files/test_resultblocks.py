"""The block-at-a-time fast path gives exactly what the line-by-line path gives, wherever the
reads fall: same bytes, counts, blank lines, hash, and the same error naming the same line."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.errors import IntegrityError
from orchestrator.files import resultblocks
from orchestrator.files.batchfiles import ResultCounts, count_results
from orchestrator.files.results import NO_REASON, normalise_results, reason_key


def _x_line(ident: int, reason: str, redacted: bool) -> bytes:
    """A line in X's own shape (as recorded, x-compliance-api.md section 4)."""
    redaction = ',"redacted_at":"2021-06-15T07:32:10.000Z"' if redacted else ""
    return (f'{{"id":"{ident}","action":"delete","created_at":"2019-08-10T12:22:39.022Z"'
            f'{redaction},"reason":"{reason}"}}').encode()


_REASON = st.sampled_from([*resultblocks.KNOWN_REASONS, "edited", "", "de", "deletedx"])
_X_LINE = st.builds(_x_line, st.integers(0, 10**19), _REASON, st.booleans())
_OTHER_LINE = st.sampled_from([
    b"", b"   ", b"\t\r", b'  {"id":"5","action":"delete","reason":"deleted"}  ',
    b'{"id":"6","action":"delete","created_at":"x","reason":"caf\xc3\xa9"}',
    b'{"id":"7","action":"delete","created_at":"x\\"y","reason":"deleted"}',
    b'{"id":"8","detail":{"reason":"nested"},"reason":"suspended"}',
    b'{"id": "9", "reason": null}',
])
_LINE = st.one_of(_X_LINE, _X_LINE, _X_LINE, _OTHER_LINE)


def _reference(content: bytes) -> tuple[bytes, Counter[str], int]:
    """The line-at-a-time model: each non-blank line parsed and written back compact."""
    out, reasons, blank = [], Counter[str](), 0
    lines = content.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    for line in lines:
        if not line.strip():
            blank += 1
            continue
        obj = json.loads(line)
        reasons[reason_key(obj)] += 1
        out.append(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n")
    return b"".join(out), reasons, blank


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(_LINE, max_size=30), final_eol=st.booleans(),
       read_size=st.integers(1, 400))
def test_any_read_size_gives_the_line_by_line_result(
    tmp_path_factory: pytest.TempPathFactory, lines: list[bytes], final_eol: bool,
    read_size: int,
) -> None:
    tmp_path = tmp_path_factory.mktemp("blocks")
    content = b"\n".join(lines) + (b"\n" if final_eol and lines else b"")
    raw = tmp_path / "raw"
    raw.write_bytes(content)
    expected, reasons, blank = _reference(content)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(resultblocks, "READ_BUFFER", read_size)  # reads end anywhere
        report = normalise_results(raw, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == expected
    assert report.by_reason == dict(reasons)
    assert report.affected == sum(reasons.values()) and report.blank_lines == blank
    assert report.output_sha256 == hashlib.sha256(expected).hexdigest()
    assert count_results(tmp_path / "out") == ResultCounts(report.affected, report.by_reason)


def test_a_big_file_in_x_shape_is_counted_whole(tmp_path: Path) -> None:
    """Several reads' worth of lines, blank lines between X's components, one reason that
    is not documented: every row counted once, the blank lines gone."""
    rows = [_x_line(10**18 + n, resultblocks.KNOWN_REASONS[n % 6] if n % 97 else "edited",
                    n % 3 == 0) for n in range(30_000)]
    content = b"\n".join(row + (b"\n" if n % 5000 == 4999 else b"")
                         for n, row in enumerate(rows)) + b"\n"
    raw = tmp_path / "raw"
    raw.write_bytes(content)
    assert len(content) > 3 * resultblocks.READ_BUFFER
    report = normalise_results(raw, tmp_path / "out")
    expected, reasons, blank = _reference(content)
    assert (tmp_path / "out").read_bytes() == expected == b"\n".join(rows) + b"\n"
    assert report.by_reason == dict(reasons) and reasons["edited"] == 310
    assert report.affected == 30_000 and report.blank_lines == blank == 6
    assert count_results(tmp_path / "out") == ResultCounts(30_000, dict(reasons))


@pytest.mark.parametrize("where", [1, 9_000, 29_999])
def test_a_line_broken_inside_a_value_is_corrupt_and_named(tmp_path: Path, where: int) -> None:
    """A newline inside a value splits an object in two: the block regex must not take the
    two halves for one line."""
    rows = [_x_line(n, "deleted", False) for n in range(30_000)]
    rows[where - 1] = rows[where - 1].replace(b'"action":"delete"', b'"action":"de\nlete"')
    raw = tmp_path / "raw"
    raw.write_bytes(b"\n".join(rows) + b"\n")
    with pytest.raises(IntegrityError, match=f"result line {where} is not valid JSON"):
        normalise_results(raw, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_reasons_that_look_alike_are_told_apart(tmp_path: Path) -> None:
    """The fast path tells documented reasons apart by one letter; lookalikes must not pass
    for them."""
    reasons = ["deleted", "deletedx", "de", "dexeted", "", "suspended", "Deleted"]
    raw = tmp_path / "raw"
    raw.write_bytes(b"\n".join(_x_line(n, r, False) for n, r in enumerate(reasons)) + b"\n")
    report = normalise_results(raw, tmp_path / "out")
    assert report.by_reason == {r: 1 for r in reasons}
    assert NO_REASON not in report.by_reason


def test_documented_reasons_are_counted_in_bulk_exactly(tmp_path: Path) -> None:
    """Blocks of nothing but X's lines (both timestamp styles, every documented reason in
    uneven shares): the counts come from the letters the reasons hold; they must be exact."""
    styles = ("2019-08-10T12:22:39.022Z", "2019-03-02T03:37:59+00:00")
    rows = []
    for n in range(40_000):
        reason = resultblocks.KNOWN_REASONS[n % 11 % 6]
        stamp = styles[n % 2]
        redaction = f',"redacted_at":"{stamp}"' if n % 3 else ""
        rows.append(f'{{"id":"{n}","action":"delete","created_at":"{stamp}"{redaction},'
                    f'"reason":"{reason}"}}\n'.encode())
    content = b"".join(rows)
    raw = tmp_path / "raw"
    raw.write_bytes(content)
    expected, reasons, _ = _reference(content)
    report = normalise_results(raw, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == content == expected
    assert report.by_reason == dict(reasons) and len(reasons) == 6
    assert count_results(tmp_path / "out") == ResultCounts(40_000, dict(reasons))
