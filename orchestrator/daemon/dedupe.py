"""Duplicate content (`inbox.duplicate_content = "link"`): reuse an earlier twin's result.

An input whose normalised upload body (so CRLF and LF copies match) equals that of an input
of the same type already delivered gets a copy of the earlier result instead of a new remote
job. The link target is persisted in the input's report before any file is written, so a
crash mid-link is finished (or undone into normal processing) at the next start, and the
input's one outbox name is written at most once over.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any, Literal

import anyio
import structlog

from orchestrator.clock import iso
from orchestrator.core.model import InputFile, InputState
from orchestrator.files.atomic import atomic_copy_verified, atomic_write_json, file_sha256
from orchestrator.files.link import link_intent, linked_manifest
from orchestrator.layout import Layout
from orchestrator.logs import WarnOnce
from orchestrator.store.sqlite import Store

log = structlog.get_logger(__name__)

DuplicatePolicy = Literal["process", "link"]
_IN_FLIGHT = (InputState.QUEUED, InputState.BATCHED)


def stored_fields(item: InputFile) -> dict[str, Any]:
    """The validated fields of an input as the database has them (for a re-queue)."""
    report = {k: v for k, v in (item.report or {}).items()
              if k not in ("waiting_for", "link")}
    return {"input_sha256": item.input_sha256, "id_count": item.id_count,
            "bad_line_count": item.bad_line_count, "report_json": report,
            "body_sha256": item.body_sha256 or report.get("body_sha256")}


class Deduper:
    """Links a validated input to a delivered twin, or parks it until an earlier one is done."""

    def __init__(self, store: Store, layout: Layout, *, link_max_age_s: float,
                 warnings: WarnOnce) -> None:
        self.store = store
        self.layout = layout
        self.link_max_age_s = link_max_age_s
        self.warnings = warnings

    async def _twins(self, item: InputFile, body_sha256: str) -> list[InputFile]:
        """Other inputs of the same type with the same upload body (not rejected ones)."""
        return await self.store.twins_of(item.job_type, body_sha256, item.id)

    async def dedupe(self, item: InputFile, fields: dict[str, Any]) -> bool:
        """Link to an earlier delivered twin, or wait for one in flight: True if handled."""
        twins = await self._twins(item, fields["report_json"]["body_sha256"])
        # Compliance status changes over time: only a recent enough result is reused.
        fresh_since = self.store.clock.now() - timedelta(seconds=self.link_max_age_s)
        delivered = sorted((t for t in twins if t.state is InputState.DELIVERED
                            and t.finished_at is not None and t.finished_at >= fresh_since),
                           key=lambda t: (iso(t.finished_at) or "", t.id), reverse=True)
        unusable: list[str] = []
        for twin in delivered:
            intent, why = await anyio.to_thread.run_sync(link_intent, self.layout, twin)
            if intent is not None:
                report = {**fields["report_json"], "link": intent}
                linking = await self.store.move_input(
                    item.id, [InputState.CLAIMED], InputState.CLAIMED, event="input.linking",
                    detail={"twin_input_id": twin.id, "twin_file": twin.name},
                    **{**fields, "report_json": report},
                )
                try:
                    failed = await self.finish_link(linking)
                except OSError as error:
                    # Intent persisted: maintenance() finishes the link once the outbox works.
                    self.warnings.warn(log, ("link", str(item.id)), "outbox.link_deferred", error,
                                       file=item.name, input_id=item.id, retry="every rescan")
                    return True
                if failed is None:
                    return True
                why = failed  # the earlier result changed under us: try an older twin
            unusable.append(f"{twin.name}: {why}")
        # Only an earlier twin is waited for: two copies never wait for each other.
        in_flight = [t for t in twins if t.state in _IN_FLIGHT
                     or (t.state is InputState.CLAIMED and t.id < item.id)]
        if in_flight:
            await self._wait_for_twin(item, fields, in_flight[0])
            return True
        if unusable:
            log.warning("input.link_unavailable", file=item.name, input_id=item.id,
                        reasons=unusable, action="processing it as a new job")
        return False

    async def _wait_for_twin(self, item: InputFile, fields: dict[str, Any],
                             twin: InputFile) -> None:
        if (item.report or {}).get("waiting_for") == twin.id:
            return  # already recorded; nothing new to say
        report = {**fields["report_json"], "waiting_for": twin.id}
        await self.store.move_input(
            item.id, [InputState.CLAIMED], InputState.CLAIMED, event="input.waiting_for_twin",
            detail={"twin_input_id": twin.id, "twin_file": twin.name},
            **{**fields, "report_json": report},
        )
        log.info("input.waiting_for_twin", file=item.name, input_id=item.id,
                 twin_file=twin.name, twin_input_id=twin.id,
                 why="same content is being processed; its result will be linked")

    async def finish_link(self, item: InputFile) -> str | None:
        """Write the linked result + manifest and mark the input delivered (idempotent).

        None when done. If the earlier result is gone or changed and no complete copy of it
        exists yet, the intent is dropped and the reason returned: the caller processes the
        input the normal way (or tries another twin). OSError (outbox not writable)
        propagates, and the intent stays for a retry.
        """
        intent = (item.report or {})["link"]
        dest = self.layout.results_path(item.job_type, item.out_stem)
        source = self.layout.outbox_for(item.job_type) / intent["results"]
        expected = intent["output_sha256"]

        def place() -> bool:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                if file_sha256(dest) == expected:
                    return True  # copied before a crash
            return atomic_copy_verified(source, dest, expected)

        if not await anyio.to_thread.run_sync(place):
            why = f"{intent['results']} was changed or removed from the outbox"
            await self.store.move_input(
                item.id, [InputState.CLAIMED], InputState.CLAIMED, event="input.link_abandoned",
                detail={"reason": why}, **stored_fields(item),
            )
            return why
        now = self.store.clock.now()
        manifest = linked_manifest(item, intent, dest, now)
        await anyio.to_thread.run_sync(
            atomic_write_json, self.layout.manifest_path(item.job_type, item.out_stem), manifest
        )
        await self.store.move_input(
            item.id, [InputState.CLAIMED], InputState.DELIVERED, event="outbox.linked",
            detail={"twin_input_id": intent["input_id"], "results": dest.name},
        )
        for leftover in (item.spool_name, item.copy_name):
            (self.layout.spool / leftover).unlink(missing_ok=True)
        self.warnings.resolved(log, ("link", str(item.id)), "outbox.link_resumed", file=item.name)
        log.info("outbox.linked", file=item.name, input_id=item.id,
                 job_type=str(item.job_type), results=dest.name, linked_file=intent["file"],
                 linked_input_id=intent["input_id"], affected=intent["affected"])
        return None
