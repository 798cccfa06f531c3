"""Store test set-up shared by the store suites (tests/store/)."""

from __future__ import annotations

from orchestrator.core.model import InputState, JobType
from orchestrator.store.sqlite import Store


async def queued_input(store: Store, name: str = "a.txt", ids: int = 3) -> int:
    """A tweets input claimed and validated (`ids` IDs), waiting for a batch."""
    row = await store.insert_claiming(job_type=JobType.TWEETS, name=name, out_stem=name[:-4],
                                      spool_name=f"{name}.spool", inode=1, size_bytes=10)
    await store.move_input(row.id, [InputState.CLAIMING], InputState.CLAIMED, event="t")
    await store.move_input(row.id, [InputState.CLAIMED], InputState.QUEUED, event="t",
                           id_count=ids)
    return row.id
