"""Hook runs in the store: intent rows written in the transaction of the input's move (or not
at all), claimed at most once, re-armed after a crash and by `retry-hooks`."""

from __future__ import annotations

import pytest
from store_helpers import queued_input

from orchestrator.core.hooks import HookTarget, RunState
from orchestrator.core.model import InputState
from orchestrator.store.sqlite import StaleState, Store

TARGETS = (HookTarget("hook", "hooks[0]", "rejected", "", 3),
           HookTarget("webhook", "webhooks[0]", "rejected", "users", 2),
           HookTarget("hook", "hooks[1]", "delivered", "", 3))


async def test_a_move_to_rejected_writes_its_runs_in_the_same_transaction(store: Store) -> None:
    store.hook_targets = TARGETS
    input_id = await queued_input(store)

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with store.transaction():
            await store._move_input(input_id, [InputState.QUEUED], InputState.REJECTED,
                                    event="input.rejected")
            assert len(await store.hook_runs()) == 1  # written, not yet committed
            raise Boom
    assert await store.hook_runs() == []  # rolled back together with the move
    await store.move_input(input_id, [InputState.QUEUED], InputState.REJECTED, event="x")
    [run] = await store.hook_runs()
    assert (run.target, run.event, run.key, run.state) == (
        "hooks[0]", "rejected", f"{input_id}-rejected", RunState.PENDING)
    with pytest.raises(StaleState):  # a refused move writes no run either
        await store.move_input(input_id, [InputState.QUEUED], InputState.REJECTED, event="x")
    assert len(await store.hook_runs()) == 1


async def test_runs_are_claimed_once_rearmed_after_a_crash_and_by_retry(store: Store) -> None:
    store.hook_targets = TARGETS
    for name in ("a.txt", "b.txt"):
        await store.move_input(await queued_input(store, name), [InputState.QUEUED],
                               InputState.REJECTED, event="x")
    first = await store.claim_due_hook_runs(1)
    assert [r.attempts for r in first] == [1] and first[0].state is RunState.RUNNING
    assert [r.id for r in await store.claim_due_hook_runs(5)] != [first[0].id]
    assert await store.claim_due_hook_runs(5) == []
    assert await store.recover_hook_runs() == 2  # a crash left both running
    again = await store.claim_due_hook_runs(5)
    assert sorted(r.key for r in again) == sorted(
        {r.key for r in await store.hook_runs()}) and all(r.attempts == 1 for r in again)
    await store.finish_hook_run(again[0].id, RunState.FAILED, error="exit status 1")
    await store.finish_hook_run(again[1].id, RunState.DONE)
    assert (await store.count_hook_runs())["failed"] == 1
    assert await store.retry_hook_runs(again[1].id) == []  # done: not retried
    assert await store.retry_hook_runs() == [again[0].id]
    rearmed = await store.get_hook_run(again[0].id)
    assert rearmed is not None and rearmed.state is RunState.PENDING and rearmed.attempts == 0
    assert rearmed.last_error == "exit status 1" and rearmed.finished_at is None


async def test_no_targets_no_rows_and_pauses_have_their_own_key(store: Store) -> None:
    await store.move_input(await queued_input(store), [InputState.QUEUED],
                           InputState.REJECTED, event="x")
    assert await store.hook_runs() == []
    store.hook_targets = (HookTarget("hook", "hooks[0]", "paused", "tweets", 1),)
    await store.record_pause_hooks("auth_refused")
    [run] = await store.hook_runs()
    assert run.key.startswith("paused-") and run.detail == {"reason": "auth_refused"}
