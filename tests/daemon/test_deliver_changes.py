"""Delivery and a claimed file that changes: writes during a long delivery reject the input
(never results for part of a file), a manifest already written is the commit point, and a
change of the ctime alone (a link-count change, same bytes) rejects nothing."""

from __future__ import annotations

import json
import os
import random
from datetime import timedelta
from pathlib import Path

import pytest
from daemon_helpers import make_ids

from orchestrator.core import machine
from orchestrator.core.model import (
    Batch,
    BatchState,
    InputFile,
    InputState,
    JobType,
    RemoteJob,
    RemoteStatus,
)
from orchestrator.daemon.deliver import deliver_batch
from orchestrator.daemon.intake import Intake
from orchestrator.files.inbox import Candidate
from orchestrator.store.sqlite import Store


def text(ids: list[str]) -> bytes:
    return "".join(f"{i}\n" for i in ids).encode()


async def batched(intake: Intake, path: Path) -> tuple[InputFile, Batch]:
    """Claim and validate `path`, put it in a batch and place that batch's (downloaded)
    results in the spool: what the runner has when it starts delivering."""
    st = path.stat()
    claimed = await intake.claim(
        Candidate(path, JobType.TWEETS, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns))
    assert claimed is not None
    item = await intake.store.get_input(claimed.id)
    assert item is not None and item.state is InputState.QUEUED and item.id_count
    batch = await intake.store.form_batch(
        JobType.TWEETS, [(item.id, 0, 0, item.id_count)], upload_name=item.ids_name,
        id_count=item.id_count, upload_bytes=item.size_bytes)
    batch = await delivering(intake.store, batch)
    results = intake.layout.batch_files(batch.id).results
    results.write_bytes(b'{"id": "1", "action": "delete", "reason": "deleted"}\n')
    item = await intake.store.get_input(item.id)
    assert item is not None and item.state is InputState.BATCHED
    return item, batch


async def delivering(store: Store, batch: Batch) -> Batch:
    """The batch through create, upload, poll and download, as the runner records them."""
    policy, rng, now = machine.Policy(max_attempts=1), random.Random(0), store.clock.now()
    job = RemoteJob(id="123", type=JobType.TWEETS, status=RemoteStatus.CREATED, created_at=now,
                    upload_url="u", upload_expires_at=now + timedelta(minutes=15),
                    download_url="d", download_expires_at=now + timedelta(days=7))
    done = RemoteJob(**{**{f: getattr(job, f) for f in job.__slots__},
                        "status": RemoteStatus.COMPLETE})
    batch = await store.apply(batch, machine.start_attempt(batch, 1))
    for seen in (machine.JobCreated(job), machine.UploadFinished(), machine.Polled(done),
                 machine.Downloaded(1)):
        batch = await store.apply(batch, machine.decide(batch, seen, now, policy, rng))
    assert batch.state is BatchState.DELIVERING
    return batch


def outbox(intake: Intake, stem: str) -> tuple[Path, Path]:
    layout = intake.layout
    return (layout.results_path(JobType.TWEETS, stem),
            layout.manifest_path(JobType.TWEETS, stem))


def change_ctime_only(path: Path) -> None:
    """What `ln` + removing the producer's own name does: same bytes, same mtime, new ctime
    (the ctime clock is coarse: link again until it moved)."""
    before = path.stat()
    for _ in range(10_000):
        os.link(path, path.with_name(path.name + ".extra"))
        path.with_name(path.name + ".extra").unlink()
        if path.stat().st_ctime_ns != before.st_ctime_ns:
            break
    after = path.stat()
    assert after.st_ctime_ns != before.st_ctime_ns
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


async def test_a_write_during_a_long_delivery_rejects_the_input_instead_of_truncating_it(
    intake: Intake, tmp_path: Path
) -> None:
    """The producer (no `.part` rename) writes through its open file while the results are
    counted and hashed (minutes for a big batch). Before: the manifest was written, cleanup
    deleted the spool file, the late IDs were lost. The `progress` heartbeat of the delivery
    is the seam: it runs between writing the results and writing the manifest."""
    first, more = make_ids(601, 50), make_ids(602, 20)
    path = tmp_path / "inbox" / "tweets" / "late.txt"
    path.write_bytes(text(first))
    with open(path, "ab") as writer:  # kept open across the claim (the spool rename)
        item, batch = await batched(intake, path)
        wrote = False

        def producer_writes() -> None:
            nonlocal wrote
            if not wrote:
                wrote = True
                writer.write(text(more))
                writer.flush()

        summaries = await deliver_batch(intake.store, intake.layout, batch,
                                        progress=producer_writes)
    assert wrote and summaries == []
    results, manifest = outbox(intake, item.out_stem)
    assert not manifest.exists() and not results.exists()  # no results for part of a file
    rejected = await intake.store.get_input(item.id)
    assert rejected is not None and rejected.state is InputState.REJECTED
    assert rejected.error and rejected.error["reason"] == "changed_after_claim"
    assert await intake.finish_rejection(item.id)
    assert (tmp_path / "outbox" / "rejected" / "late.txt").read_bytes() == text(first + more)


async def test_a_redo_after_the_manifest_was_written_delivers_whatever_the_spool_file_did(
    intake: Intake, tmp_path: Path
) -> None:
    """kill -9 after the manifest (the commit point), before the database said delivered;
    the spool file changes before the restart. The redo must see the manifest first, not
    reject an input whose results the consumer may already have taken."""
    path = tmp_path / "inbox" / "tweets" / "done.txt"
    path.write_bytes(text(make_ids(603, 10)))
    item, batch = await batched(intake, path)
    real_mark = intake.store.mark_delivered

    async def killed(input_id: int, batch_id: int) -> None:
        raise KeyboardInterrupt  # the process dies here; the database never hears of it

    intake.store.mark_delivered = killed  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        await deliver_batch(intake.store, intake.layout, batch)
    intake.store.mark_delivered = real_mark  # type: ignore[method-assign]
    results, manifest = outbox(intake, item.out_stem)
    written = manifest.read_bytes()
    spooled = intake.layout.spool / item.spool_name
    with open(spooled, "ab") as late:
        late.write(b"1234567\n")
    summaries = await deliver_batch(intake.store, intake.layout, batch)
    assert summaries == [{"file": "done.txt", "input_id": item.id,
                          "results": f"{item.out_stem}.jsonl", "already_delivered": True}]
    delivered = await intake.store.get_input(item.id)
    assert delivered is not None and delivered.state is InputState.DELIVERED
    assert manifest.read_bytes() == written and results.exists()
    assert not (tmp_path / "outbox" / "rejected").exists() or not any(
        (tmp_path / "outbox" / "rejected").iterdir())


async def test_a_link_count_change_alone_does_not_reject_a_finished_input(
    intake: Intake, tmp_path: Path
) -> None:
    """Same bytes, same mtime, a new ctime (hard link added and removed): delivered."""
    path = tmp_path / "inbox" / "tweets" / "linked.txt"
    path.write_bytes(text(make_ids(604, 10)))
    item, batch = await batched(intake, path)
    change_ctime_only(intake.layout.spool / item.spool_name)
    summaries = await deliver_batch(intake.store, intake.layout, batch)
    assert [s["file"] for s in summaries] == ["linked.txt"] and "already_delivered" not in (
        summaries[0])
    delivered = await intake.store.get_input(item.id)
    assert delivered is not None and delivered.state is InputState.DELIVERED
    _, manifest = outbox(intake, item.out_stem)
    assert json.loads(manifest.read_text())["input"]["sha256"] == item.input_sha256


async def test_a_ctime_only_change_with_other_bytes_is_still_rejected(
    intake: Intake, tmp_path: Path
) -> None:
    """Rewritten in place to the same size and its mtime put back: only the ctime says so;
    the content hash decides."""
    path = tmp_path / "inbox" / "tweets" / "forged.txt"
    ids = make_ids(605, 10)
    path.write_bytes(text(ids))
    item, batch = await batched(intake, path)
    spooled = intake.layout.spool / item.spool_name
    st = spooled.stat()
    body = bytearray(spooled.read_bytes())
    body[0] = ord("9") if body[0] != ord("9") else ord("8")
    spooled.write_bytes(bytes(body))
    os.utime(spooled, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert await deliver_batch(intake.store, intake.layout, batch) == []
    rejected = await intake.store.get_input(item.id)
    assert rejected is not None and rejected.state is InputState.REJECTED


async def test_a_redo_after_a_rejection_inside_a_pack_delivers_the_rest_without_its_body(
    intake: Intake, tmp_path: Path
) -> None:
    """A pack of two: the first file changed during the delivery (rejected, then moved to
    outbox/rejected/ with its spool body), kill -9 before the second was marked delivered.
    The redo must split the results for the second alone: the first's body is gone, and
    reading it wedged the batch in `delivering` for ever (found by the torture test)."""
    claimed = []
    for name, seed in (("grows.txt", 611), ("steady.txt", 612)):
        path = tmp_path / "inbox" / "tweets" / name
        path.write_bytes(text(make_ids(seed, 5)))
        st = path.stat()
        got = await intake.claim(Candidate(path, JobType.TWEETS, st.st_size, st.st_mtime_ns,
                                           st.st_ino, st.st_ctime_ns))
        assert got is not None
        item = await intake.store.get_input(got.id)
        assert item is not None and item.id_count == 5
        claimed.append(item)
    grows, steady = claimed
    batch = await intake.store.form_batch(
        JobType.TWEETS, [(grows.id, 0, 0, 5), (steady.id, 0, 0, 5)], upload_name="pack.ids",
        id_count=10, upload_bytes=grows.size_bytes + steady.size_bytes)
    batch = await delivering(intake.store, batch)
    steady_ids = make_ids(612, 5)
    intake.layout.batch_files(batch.id).results.write_bytes(
        b"".join(b'{"id":"%s","action":"delete","reason":"deleted"}\n' % i.encode()
                 for i in (make_ids(611, 5)[0], steady_ids[0], steady_ids[1])))
    with open(intake.layout.spool / grows.spool_name, "ab") as late:
        late.write(b"1234567\n")  # the producer writes on: rejected at delivery
    real_mark = intake.store.mark_delivered

    async def killed(input_id: int, batch_id: int) -> None:
        raise KeyboardInterrupt

    intake.store.mark_delivered = killed  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        await deliver_batch(intake.store, intake.layout, batch)
    intake.store.mark_delivered = real_mark  # type: ignore[method-assign]
    assert await intake.finish_rejection(grows.id)  # its file (and body) leave the spool
    summaries = await deliver_batch(intake.store, intake.layout, batch)
    assert [s["file"] for s in summaries] == ["steady.txt"]
    delivered = await intake.store.get_input(steady.id)
    assert delivered is not None and delivered.state is InputState.DELIVERED
    results, _manifest = outbox(intake, steady.out_stem)
    assert [json.loads(line)["id"] for line in results.read_text().splitlines()] == \
        steady_ids[:2]
    assert (tmp_path / "outbox" / "rejected" / "grows.txt").exists()
