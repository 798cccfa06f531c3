"""Upload bodies without copies: a well-formed file is its own body (no `.ids` copy), a pack
streams its members' files end to end (no `.pack.ids`), byte for byte what the copies held,
and a restart between any two of these steps finds everything it needs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from clocks import FakeClock
from daemon_helpers import make_ids

from orchestrator.core.model import InputFile, InputState, JobType
from orchestrator.daemon.intake import Intake
from orchestrator.daemon.scheduler import PackingLimits, Scheduler, upload_body
from orchestrator.files.batchfiles import Slice, build_body
from orchestrator.files.inbox import Candidate
from orchestrator.layout import Layout
from orchestrator.store.sqlite import Store

TYPES = (JobType.TWEETS,)


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "inbox", tmp_path / "outbox", tmp_path / "state")
    layout.ensure()
    layout.inbox_for(JobType.TWEETS).mkdir(parents=True)
    return layout


@pytest.fixture
async def store(layout: Layout) -> AsyncIterator[Store]:
    store = await Store.open(layout.db_path, FakeClock())
    try:
        yield store
    finally:
        await store.close()


async def claim(store: Store, layout: Layout, name: str, content: bytes) -> InputFile:
    path = layout.inbox_for(JobType.TWEETS) / name
    path.write_bytes(content)
    st = path.stat()
    claimed = await Intake(store, layout).claim(Candidate(
        path, JobType.TWEETS, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns))
    assert claimed is not None
    item = await store.get_input(claimed.id)
    assert item is not None and item.state is InputState.QUEUED
    return item


def ids_text(seed: int, count: int, newline: bytes = b"\n") -> bytes:
    return b"".join(i.encode() + newline for i in make_ids(seed, count))


def spool_files(layout: Layout) -> list[str]:
    return sorted(p.name for p in layout.spool.iterdir() if p.is_file())


async def test_a_clean_file_is_its_own_body_and_nothing_is_copied(
    store: Store, layout: Layout
) -> None:
    content = ids_text(1, 500)
    item = await claim(store, layout, "clean.txt", content)
    assert item.body_is_input and item.ids_name == item.spool_name
    assert item.body_sha256 == item.input_sha256
    assert spool_files(layout) == [item.spool_name]
    batch = await Scheduler(store, layout, PackingLimits()).next_batch(TYPES)
    assert batch is not None and batch.upload_name == item.spool_name
    assert batch.upload_bytes == len(content)
    body = await upload_body(store, layout, batch)
    assert isinstance(body, Path) and body.read_bytes() == content


async def test_a_file_that_needs_normalising_still_gets_its_copy(
    store: Store, layout: Layout
) -> None:
    item = await claim(store, layout, "windows.txt", ids_text(2, 50, b"\r\n"))
    assert not item.body_is_input and item.ids_name == item.copy_name
    assert spool_files(layout) == sorted([item.spool_name, item.copy_name])
    assert (layout.spool / item.ids_name).read_bytes() == ids_text(2, 50)


async def test_a_pack_streams_its_members_byte_for_byte_and_survives_a_restart(
    store: Store, layout: Layout, tmp_path: Path
) -> None:
    items = [await claim(store, layout, "a.txt", ids_text(3, 300)),
             await claim(store, layout, "b.txt", ids_text(4, 20, b"\r\n")),
             await claim(store, layout, "c.txt", ids_text(5, 1))]
    before = spool_files(layout)
    batch = await Scheduler(store, layout, PackingLimits()).next_batch(TYPES)
    assert batch is not None and batch.id_count == 321
    assert spool_files(layout) == before  # no .pack.ids written
    # What the copy of older versions held (and what they uploaded):
    reference = tmp_path / "reference.ids"
    build_body([Slice(layout.spool / i.ids_name) for i in items], reference)
    assert batch.upload_bytes == reference.stat().st_size

    # A restart between forming the batch and uploading it (kill -9: nothing else happened).
    await store.close()
    reopened = await Store.open(layout.db_path, FakeClock())
    try:
        scheduler = Scheduler(reopened, layout, PackingLimits())
        again = await scheduler.next_batch(TYPES)  # sweeps the spool first
        assert again is not None and again.id == batch.id
        assert spool_files(layout) == before
        body = await scheduler.ensure_body(again)
        assert isinstance(body, list)
        assert b"".join(p.read_bytes() for p in body) == reference.read_bytes()
    finally:
        await reopened.close()


async def test_an_older_copy_of_a_clean_file_is_swept_and_its_original_kept(
    store: Store, layout: Layout
) -> None:
    item = await claim(store, layout, "old.txt", ids_text(6, 40))
    (layout.spool / item.copy_name).write_bytes(ids_text(6, 40))  # as 0.2.0 left it
    scheduler = Scheduler(store, layout, PackingLimits())
    assert await scheduler.sweep_spool() == [item.copy_name]
    assert spool_files(layout) == [item.spool_name]


async def test_rejecting_a_file_that_is_its_own_body_moves_it_whole(
    store: Store, layout: Layout
) -> None:
    content = ids_text(7, 30)
    item = await claim(store, layout, "gone.txt", content)
    await Intake(store, layout).reject(item, {"stage": "delivery", "reason": "test",
                                              "message": "gone.txt: a test"})
    assert (layout.rejected / "gone.txt").read_bytes() == content
    assert spool_files(layout) == []


async def test_a_crash_between_validating_and_queueing_needs_no_copy_on_recovery(
    store: Store, layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 after the read pass, before the queue row: nothing was written but the claim,
    so recovery reads the file again; a `.ids` copy an older version left is removed."""
    content = ids_text(8, 60)
    path = layout.inbox_for(JobType.TWEETS) / "crash.txt"
    path.write_bytes(content)
    st = path.stat()
    first = Intake(store, layout)

    async def killed(item: InputFile, fields: object) -> None:
        del item, fields

    monkeypatch.setattr(first, "_queue", killed)
    claimed = await first.claim(Candidate(
        path, JobType.TWEETS, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns))
    assert claimed is not None
    stale = layout.spool / claimed.copy_name
    stale.write_bytes(content)  # as an older version's validation would have left it
    item = await store.get_input(claimed.id)
    assert item is not None and item.state is InputState.CLAIMED

    await Intake(store, layout).recover()
    item = await store.get_input(claimed.id)
    assert item is not None and item.state is InputState.QUEUED and item.body_is_input
    assert spool_files(layout) == [item.spool_name]
    assert (layout.spool / item.ids_name).read_bytes() == content
