"""A compliant copy of a JSON Lines input: the input minus the objects X says to delete, with
`geo` removed where the only reason is `scrub_geo`, in the input's own order.

X's rows all say `"action": "delete"`; the reason decides. An ID with any reason other than
`scrub_geo` (deleted, suspended, protected, deactivated, and any reason X adds) is removed;
one listed only for `scrub_geo` keeps its object without `geo`. A response page keeps its
line with the affected objects taken out of `data` (and out of `includes.tweets`/`users`).
Lines X did not touch are copied byte for byte; a changed line is re-serialised compactly.
Lines that are not JSON objects (reported at intake in drop mode) are left out: nothing
unverified goes into a copy called compliant.

Streamed a block of lines at a time; the reasons come from an on-disk index (memory flat).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import msgspec

from orchestrator.files.atomic import Progress, atomic_output

SCRUB_GEO = "scrub_geo"
BLOCK_LINES = 8192


class ReasonLookup(Protocol):
    def add(self, rows: Iterable[tuple[str, str]]) -> None: ...

    def reasons_for(self, ids: Iterable[str]) -> dict[str, set[str]]: ...


class _Result(msgspec.Struct):
    id: str
    reason: str = ""


class _Object(msgspec.Struct):
    id: str | int | None = None


class _Probe(msgspec.Struct):
    id: str | int | None = None
    data: list[_Object] | _Object | None = None


_RESULT = msgspec.json.Decoder(_Result)
_PROBE = msgspec.json.Decoder(_Probe)


@dataclass(frozen=True, slots=True)
class CopyCounts:
    objects: int  # objects read (a page's data counts each)
    removed: int
    scrubbed: int
    skipped_lines: int  # not a JSON object: left out

    def as_dict(self) -> dict[str, int]:
        return {"objects": self.objects, "removed": self.removed, "scrubbed": self.scrubbed,
                "skipped_lines": self.skipped_lines}


def _result_rows(results: Path) -> Iterator[tuple[str, str]]:
    with open(results, "rb") as inp:
        for line in inp:
            if line.strip():
                row = _RESULT.decode(line)
                yield row.id, row.reason


def _verdict(reasons: set[str] | None) -> str:
    if not reasons:
        return "keep"
    return "scrub" if reasons == {SCRUB_GEO} else "remove"


def _object_ids(probe: _Probe) -> list[str]:
    if probe.id is not None:
        return [str(probe.id)]
    items = probe.data if isinstance(probe.data, list) else [probe.data] if probe.data else []
    return [str(item.id) for item in items if item.id is not None]


def _scrubbed(obj: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in obj.items() if key != "geo"}


def _rewrite_page(page: dict[str, Any], found: dict[str, set[str]]) -> tuple[bytes, int, int]:
    """The page without removed objects and with geo scrubbed; (line, removed, scrubbed)."""
    removed = scrubbed = 0

    def keep(items: list[Any], count: bool) -> list[Any]:
        nonlocal removed, scrubbed
        kept = []
        for obj in items:
            verdict = _verdict(found.get(str(obj.get("id")))) if isinstance(obj, dict) else "keep"
            if verdict == "remove":
                removed += count
                continue
            if verdict == "scrub":
                scrubbed += count
                obj = _scrubbed(obj)
            kept.append(obj)
        return kept

    data = page.get("data")
    if isinstance(data, list):
        page["data"] = keep(data, True)
    elif isinstance(data, dict):
        kept = keep([data], True)
        if kept:
            page["data"] = kept[0]
        else:
            del page["data"]
    includes = page.get("includes")
    if isinstance(includes, dict):
        for name in ("tweets", "users"):
            if isinstance(includes.get(name), list):
                includes[name] = keep(includes[name], False)
    return json.dumps(page, ensure_ascii=False, separators=(",", ":")).encode(), removed, scrubbed


class _Writer:
    def __init__(self, out: Any, index: ReasonLookup) -> None:
        self.out, self.index = out, index
        self.objects = self.removed = self.scrubbed = self.skipped = 0

    def block(self, lines: list[bytes]) -> None:
        probes: list[tuple[bytes, _Probe | None]] = []
        ids: list[str] = []
        for line in lines:
            if not line.strip():
                continue
            try:
                probe = _PROBE.decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError):
                probes.append((line, None))
                continue
            probes.append((line, probe))
            ids += _object_ids(probe)
        found = self.index.reasons_for(ids) if ids else {}
        for line, maybe in probes:
            if maybe is None:
                self.skipped += 1
                continue
            probe = maybe
            own = _object_ids(probe)
            self.objects += len(own)
            if not any(i in found for i in own):
                self.out.write(line.rstrip(b"\r\n") + b"\n")  # untouched: byte for byte
                continue
            if probe.id is not None:
                verdict = _verdict(found.get(own[0]))
                if verdict == "remove":
                    self.removed += 1
                    continue
                obj = json.loads(line)
                self.scrubbed += 1
                self.out.write(json.dumps(_scrubbed(obj), ensure_ascii=False,
                                          separators=(",", ":")).encode() + b"\n")
                continue
            rewritten, removed, scrubbed = _rewrite_page(json.loads(line), found)
            self.removed += removed
            self.scrubbed += scrubbed
            self.out.write(rewritten + b"\n")


def write_compliant_copy(src: Path, results: Path, dest: Path, index: ReasonLookup,
                         progress: Progress | None = None) -> CopyCounts:
    """Write `dest` (atomically, fsynced) from the JSON Lines input `src` and the result rows
    X gave for it in `results`; `index` is an empty ReasonIndex on disk."""
    index.add(_result_rows(results))
    with open(src, "rb") as inp, atomic_output(dest) as out:
        writer = _Writer(out, index)
        lines: list[bytes] = []
        first = True
        for line in inp:
            if first:
                line = line.removeprefix(b"\xef\xbb\xbf")
                first = False
            lines.append(line)
            if len(lines) >= BLOCK_LINES:
                writer.block(lines)
                lines = []
                if progress is not None:
                    progress()
        writer.block(lines)
    return CopyCounts(writer.objects, writer.removed, writer.scrubbed, writer.skipped)
