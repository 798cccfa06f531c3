"""PURE input lifecycle: which moves an input file may make, and what a finished batch does
to the inputs it carried. No I/O; the store checks and executes what this decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from orchestrator.core.model import BatchState, InputState

I = InputState  # noqa: E741 (reads like the table it is)

INPUT_ALLOWED: Final[dict[InputState, frozenset[InputState]]] = {
    # The claim's rename into the spool happened (an undone claim deletes the row instead).
    I.CLAIMING: frozenset({I.CLAIMED}),
    # Validated; or still claimed while linking to a twin; or linked to a delivered twin's
    # results; or refused (bad file).
    I.CLAIMED: frozenset({I.CLAIMED, I.QUEUED, I.DELIVERED, I.REJECTED}),
    I.QUEUED: frozenset({I.BATCHED, I.REJECTED}),
    # A split input can be in a batch while its next part joins another; its batch ends done
    # (delivered, or queued again while parts remain), failed or cancelled (rejected).
    I.BATCHED: frozenset({I.BATCHED, I.DELIVERED, I.QUEUED, I.REJECTED}),
    I.DELIVERED: frozenset(),
    I.REJECTED: frozenset(),
}


class InputMoveNotAllowed(ValueError):
    """A move outside INPUT_ALLOWED was asked for: a bug in the caller, nothing was written."""


def check_input_move(from_states: Iterable[InputState], to_state: InputState) -> None:
    """Raise InputMoveNotAllowed unless every one of `from_states` may move to `to_state`."""
    bad = sorted(str(s) for s in from_states if to_state not in INPUT_ALLOWED[s])
    if bad:
        raise InputMoveNotAllowed(f"input move {'|'.join(bad)} -> {to_state} is not allowed")


@dataclass(frozen=True, slots=True)
class CarriedInput:
    """An input of a batch that just reached a final state, with its coverage."""

    input_id: int
    state: InputState
    id_count: int | None
    covered: int  # its IDs in batches that are done, this one included if it is done


@dataclass(frozen=True, slots=True)
class InputMove:
    input_id: int
    to_state: InputState
    event: str
    detail: Mapping[str, Any] = field(default_factory=dict)
    rejected: bool = False  # carries an error record (the store attaches it)


def batch_finished(
    batch_id: int, to_state: BatchState, inputs: Sequence[CarriedInput],
    *, reason: str | None = None,
) -> list[InputMove]:
    """The moves (each from `batched`) that a batch reaching `to_state` causes.

    failed / cancelled: every input goes to outbox/rejected (a cancel is the operator's
    `cancel`, whose inputs are never silently requeued; `requeue` brings them back).
    done: delivered when all its IDs are covered by done batches, else queued for the next
    part. Inputs already delivered (one by one during delivery) or rejected during delivery
    (changed after their claim) stay as they are.
    """
    if not to_state.is_final:
        raise ValueError(f"batch state {to_state} is not final")
    moves: list[InputMove] = []
    for item in inputs:
        if item.state.is_final:
            continue
        detail: dict[str, Any] = {"batch_id": batch_id}
        if to_state is BatchState.DONE:
            if item.covered >= (item.id_count or 0):
                moves.append(InputMove(item.input_id, I.DELIVERED, "outbox.delivered", detail))
            else:
                moves.append(InputMove(item.input_id, I.QUEUED, "input.part_done", detail))
            continue
        if to_state is BatchState.CANCELLED and reason:
            detail["reason"] = reason
        moves.append(InputMove(item.input_id, I.REJECTED, "input.rejected", detail,
                               rejected=True))
    return moves


WITHDRAW_REASON: Final = "withdrawn"


def withdraw_refusal(
    name: str, state: InputState, covered: int, open_batches: Sequence[int]
) -> str | None:
    """Why a queued input cannot be withdrawn (`withdraw NAME`), None when it can: only a
    queued input no batch carries, none of whose IDs have gone through a job, moves
    QUEUED -> REJECTED (INPUT_ALLOWED). A batch's inputs are the batch's: `cancel BATCH`."""
    if open_batches:
        first = open_batches[0]
        return (f"{name} is in batch {first} already; withdraw it with "
                f"`cancel {first}` (all of that batch's inputs go to outbox/rejected/)")
    if state is I.CLAIMED:
        return f"{name} is being checked right now; try again in a few seconds"
    if state is not I.QUEUED:
        return f"{name} is {state}: only a queued file can be withdrawn"
    if covered:
        return (f"{name} is split into parts and {covered} of its IDs have been through a "
                "job already; let it finish")
    return None
