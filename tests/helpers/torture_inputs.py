"""The torture test's inputs: plain ID files and hostile inbox entries, each with the outcome
it must reach, and the check of that outcome against what the daemon left in the outbox."""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from daemon_helpers import make_ids
from resilience_helpers import Delivery, Rejection, result_rows

from orchestrator.files.inbox import display_name
from orchestrator.sandbox import Sandbox

ERROR_SUFFIX = ".error.json"


@dataclass
class InputSpec:
    job_type: str
    name: str | bytes  # bytes: a name that is not UTF-8
    lines: list[str]
    ids: list[str]  # the valid IDs among the lines
    expect: str = "delivered"  # delivered | rejected | whole_or_rejected
    kind: str = "file"  # file | empty | fifo | symlink | growing | odd_name | huge
    reason: str | None = None  # the rejection's reason, if one is expected
    entry_kind: str | None = None  # what the rejected entry must still be (fifo, symlink)
    target: Path | None = None  # a symlink's target
    after: str | None = None  # dropped only once outbox/rejected/<after> exists

    @property
    def display(self) -> str:
        return display_name(os.fsdecode(self.name))

    def data(self) -> bytes:
        return "".join(f"{line}\n" for line in self.lines).encode()

    @cached_property
    def sha256(self) -> str | None:
        if self.kind in ("fifo", "symlink", "empty"):
            return None  # no content of its own (or one that every empty file shares)
        return hashlib.sha256(self.data()).hexdigest()

    def ready(self, workdir: Path) -> bool:
        return self.after is None or os.path.lexists(workdir / "outbox" / "rejected" / self.after)

    def matches(self, delivered: list[Delivery], rejected: dict[str, list[Rejection]]
                ) -> tuple[list[Delivery], list[Rejection]]:
        """Its result sets (by name, or by content if the daemon named it otherwise) and its
        rejections."""
        mine = [d for d in delivered if d.job_type == self.job_type and (
            d.file == self.display or (self.sha256 is not None and d.sha256 == self.sha256))]
        refused = [r for r in rejected.get(self.display, [])
                   if r.doc.get("job_type") in (None, self.job_type)]
        return mine, refused

    def outcomes(self, delivered: list[Delivery], rejected: dict[str, list[Rejection]]
                 ) -> list[str]:
        mine, refused = self.matches(delivered, rejected)
        return ["delivered"] * len(mine) + ["rejected"] * len(refused)

    def verify(self, workdir: Path, sb: Sandbox, delivered: list[Delivery],
               rejected: dict[str, list[Rejection]]) -> tuple[str, list[str], int]:
        """(lost | duplicated | delivered | rejected | wrong, problems, repeated rows)."""
        mine, refused = self.matches(delivered, rejected)
        if not mine and not refused:
            return "lost", ["no result set and no rejection"], 0
        if len(mine) + len(refused) > 1:
            return "duplicated", [
                f"{len(mine)} result sets {[d.stem for d in mine]} and {len(refused)} "
                f"rejections {[r.entry for r in refused]}"], 0
        if refused:
            rejection = refused[0]
            doc = rejection.doc
            problems = []
            if not (doc.get("stage") and (doc.get("message") or doc.get("reason"))):
                problems.append(f"rejection without a reason: {doc}")
            if self.expect == "delivered":
                problems.append(f"rejected although it is valid: {doc}")
            if self.reason is not None and doc.get("reason") != self.reason:
                problems.append(f"rejected as {doc.get('reason')!r}, not {self.reason!r}")
            if self.entry_kind is not None and rejection.kind != self.entry_kind:
                problems.append(f"outbox/rejected/{rejection.entry} is a {rejection.kind}, "
                                f"not the {self.entry_kind} that was dropped")
            return "rejected", problems, 0
        result = mine[0]
        if self.expect == "rejected":
            return "wrong", [f"delivered as {result.stem} although it must be rejected"], 0
        rows = result_rows(workdir, self.job_type, result.stem)
        truth = sb.expected_rows(self.job_type, self.ids)

        def key(row: dict[str, Any]) -> str:
            return json.dumps(row, sort_keys=True)

        problems = []
        submitted = result.manifest.get("counts", {}).get("submitted")
        if submitted != len(self.ids):
            problems.append(f"delivered with {submitted} of its {len(self.ids)} IDs "
                            "(truncated: the rest was written after the claim)")
        if sorted(rows, key=key) != sorted(truth, key=key):
            got, want = {key(r) for r in rows}, {key(r) for r in truth}
            problems.append(f"{len(rows)} result rows, the sandbox says {len(truth)}; "
                            f"e.g. {sorted(got ^ want)[:2]}")
        repeats = len(rows) - len({row["id"] for row in rows})
        return ("wrong" if problems else "delivered"), problems, repeats


def plan_hostile(rng: random.Random, workdir: Path, *, huge_rejected: bool) -> list[InputSpec]:
    """Entries a careless or malicious producer leaves in the inbox, in a seeded order."""
    outside = workdir / "outside"
    outside.mkdir()
    base = rng.randrange(10**6)
    target_ids = make_ids(base, 50)
    (outside / "ids.txt").write_text("".join(f"{i}\n" for i in target_ids))
    # Looks like our record for `sx`: must not make the daemon reuse (overwrite) that name.
    (outside / "forged.json").write_text(json.dumps({"file": "sx", "reason": "forged"}))

    def ids(n: int, count: int) -> list[str]:
        return make_ids(base + n, count)

    not_regular: dict[str, Any] = {"expect": "rejected", "reason": "not_a_regular_file"}
    specs = [
        InputSpec("tweets", "fifo.txt", [], [], kind="fifo", entry_kind="fifo", **not_regular),
        # A fifo named like the record of a file that will be rejected (issue 10, item 1).
        InputSpec("users", "fx.error.json", [], [], kind="fifo", entry_kind="fifo",
                  **not_regular),
        InputSpec("users", "fx", [], [], kind="empty", reason="empty", after="fx.error.json",
                  expect="rejected"),
        InputSpec("tweets", "link.txt", [], [], kind="symlink", entry_kind="symlink",
                  target=outside / "ids.txt", **not_regular),
        InputSpec("tweets", "sx.error.json", [], [], kind="symlink", entry_kind="symlink",
                  target=outside / "forged.json", **not_regular),
        InputSpec("tweets", "sx", ["not an id", "12x4"], [], kind="empty",
                  after="sx.error.json", expect="rejected"),
        InputSpec("tweets", "zero.txt", [], [], kind="empty", reason="empty",
                  expect="rejected"),
        InputSpec("users", b"latin1-caf\xe9-\xff.txt", [], [], kind="odd_name"),
        InputSpec("tweets", "esc-\x1b[31mred\x1b[0m-\x07.txt", [], [], kind="odd_name"),
        InputSpec("users", "new\nline\ttab\r.txt", [], [], kind="odd_name"),
        InputSpec("tweets", "grow-t.txt", [], [], kind="growing", expect="whole_or_rejected"),
        InputSpec("users", "grow-u.txt", [], [], kind="growing", expect="whole_or_rejected"),
        InputSpec("tweets", "huge.txt", [], [], kind="huge",
                  expect="rejected" if huge_rejected else "delivered"),
    ]
    for n, spec in enumerate(specs):
        count = {"odd_name": 200, "growing": 800, "huge": 50_000}.get(spec.kind, 0)
        if count:
            spec.ids = ids(100 + n, count)
            spec.lines = list(spec.ids)
    rng.shuffle(specs)  # a file that a record-named entry shadows waits for it (`after`)
    return specs


def check_hostile(workdir: Path, hostile: list[InputSpec],
                  rejected: dict[str, list[Rejection]]) -> list[str]:
    """What the daemon must not have touched: symlink targets outside the inbox."""
    del rejected
    problems = []
    outside = workdir / "outside"
    for spec in hostile:
        if spec.target is not None and not spec.target.is_file():
            problems.append(f"symlink target {spec.target.name} is gone")
    forged = json.loads((outside / "forged.json").read_text())
    if forged != {"file": "sx", "reason": "forged"}:
        problems.append(f"the file a symlink pointed to was overwritten: {forged}")
    return problems
