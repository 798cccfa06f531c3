"""The input lifecycle: the transition table and the cascade when a batch finishes (pure)."""

from __future__ import annotations

import pytest

from orchestrator.core.inputs import (
    INPUT_ALLOWED,
    CarriedInput,
    InputMoveNotAllowed,
    batch_finished,
    check_input_move,
    withdraw_refusal,
)
from orchestrator.core.model import BatchState, InputState

I = InputState  # noqa: E741


def test_every_state_has_a_row_and_final_states_are_dead_ends() -> None:
    assert set(INPUT_ALLOWED) == set(InputState)
    for state, targets in INPUT_ALLOWED.items():
        assert (not targets) == state.is_final


def test_every_state_is_reachable_from_claiming() -> None:
    seen, todo = {I.CLAIMING}, [I.CLAIMING]
    while todo:
        for target in INPUT_ALLOWED[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    assert seen == set(InputState)


@pytest.mark.parametrize(("sources", "target"), [
    ([I.DELIVERED], I.QUEUED),           # delivered is for good
    ([I.REJECTED], I.QUEUED),            # requeue makes a new input, it never revives a row
    ([I.CLAIMING], I.QUEUED),            # not validated yet
    ([I.QUEUED], I.DELIVERED),           # results only come through a batch (or a twin link)
    ([I.CLAIMED, I.QUEUED], I.CLAIMED),  # one bad source spoils the move
])
def test_moves_outside_the_table_are_refused(sources: list[InputState], target: InputState) -> None:
    with pytest.raises(InputMoveNotAllowed, match="not allowed"):
        check_input_move(sources, target)


def test_moves_in_the_table_pass() -> None:
    check_input_move([I.CLAIMED, I.QUEUED], I.REJECTED)
    check_input_move([I.QUEUED, I.BATCHED], I.BATCHED)


def carried(input_id: int, *, ids: int = 10, covered: int = 0,
            state: InputState = I.BATCHED) -> CarriedInput:
    return CarriedInput(input_id, state, ids, covered)


def test_done_delivers_whole_inputs_and_requeues_split_ones() -> None:
    moves = batch_finished(7, BatchState.DONE, [
        carried(1, covered=10), carried(2, covered=4), carried(3, state=I.DELIVERED),
    ])
    assert [(m.input_id, m.to_state, m.event) for m in moves] == [
        (1, I.DELIVERED, "outbox.delivered"), (2, I.QUEUED, "input.part_done"),
    ]
    assert all(m.detail == {"batch_id": 7} and not m.rejected for m in moves)


def test_failed_rejects_every_input_not_yet_delivered() -> None:
    moves = batch_finished(7, BatchState.FAILED, [carried(1), carried(2, state=I.DELIVERED)],
                           reason="gave up")
    assert [(m.input_id, m.to_state, m.rejected) for m in moves] == [(1, I.REJECTED, True)]
    assert moves[0].detail == {"batch_id": 7}


def test_cancelled_rejects_with_the_reason_and_never_requeues() -> None:
    moves = batch_finished(7, BatchState.CANCELLED, [carried(1), carried(2, covered=3)],
                           reason="cancelled by operator")
    assert {m.to_state for m in moves} == {I.REJECTED}
    assert moves[0].detail == {"batch_id": 7, "reason": "cancelled by operator"}


def test_only_final_batch_states_cascade() -> None:
    with pytest.raises(ValueError, match="not final"):
        batch_finished(7, BatchState.WAITING, [carried(1)])


def test_withdraw_only_a_queued_input_no_batch_carries() -> None:
    assert withdraw_refusal("a", InputState.QUEUED, 0, []) is None
    assert "`cancel 4`" in (withdraw_refusal("a", InputState.BATCHED, 0, [4]) or "")
    assert "checked right now" in (withdraw_refusal("a", InputState.CLAIMED, 0, []) or "")
    assert "let it finish" in (withdraw_refusal("a", InputState.QUEUED, 5, []) or "")
    assert "only a queued file" in (withdraw_refusal("a", InputState.DELIVERED, 0, []) or "")
