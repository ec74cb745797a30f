"""The run lifecycle: exactly the moves of the table, terminal phases, attempts, A2A states."""

from __future__ import annotations

from itertools import product

import pytest

from controlplane.domain.agents.lifecycle import IllegalTransition as AgentIllegalTransition
from controlplane.domain.runs.lifecycle import (
    TERMINAL,
    TRANSITIONS,
    A2ATaskState,
    IllegalTransition,
    RunPhase,
    RunReason,
    a2a_state,
    attempt_after,
    check_transition,
    is_terminal,
)

P = RunPhase
# The table, written out once more by hand: a change to the lifecycle must change both.
EXPECTED = {
    (P.PENDING, P.DISPATCHED),
    (P.PENDING, P.FAILED),
    (P.PENDING, P.CANCELED),
    (P.PENDING, P.TIMED_OUT),
    (P.DISPATCHED, P.RUNNING),
    (P.DISPATCHED, P.FAILED),
    (P.DISPATCHED, P.CANCELED),
    (P.DISPATCHED, P.TIMED_OUT),
    (P.RUNNING, P.DISPATCHED),
    (P.RUNNING, P.INPUT_REQUIRED),
    (P.RUNNING, P.SUCCEEDED),
    (P.RUNNING, P.FAILED),
    (P.RUNNING, P.CANCELED),
    (P.RUNNING, P.TIMED_OUT),
    (P.INPUT_REQUIRED, P.RUNNING),
    (P.INPUT_REQUIRED, P.FAILED),
    (P.INPUT_REQUIRED, P.CANCELED),
    (P.INPUT_REQUIRED, P.TIMED_OUT),
}
ALL_MOVES = list(product(RunPhase, RunPhase))


def test_the_table_is_exactly_the_expected_list_of_moves() -> None:
    assert {(src, dst) for src, targets in TRANSITIONS.items() for dst in targets} == EXPECTED
    assert set(TRANSITIONS) == set(RunPhase)


@pytest.mark.parametrize(("current", "target"), sorted(EXPECTED), ids=lambda p: str(p))
def test_an_allowed_move_passes(current: RunPhase, target: RunPhase) -> None:
    check_transition(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [m for m in ALL_MOVES if m not in EXPECTED],
    ids=lambda p: str(p),
)
def test_every_other_move_is_illegal(current: RunPhase, target: RunPhase) -> None:
    with pytest.raises(IllegalTransition) as refused:
        check_transition(current, target)
    assert (refused.value.current, refused.value.target) == (current, target)


def test_the_run_lifecycle_raises_the_agent_lifecycle_error_so_the_api_maps_it_to_409() -> None:
    assert IllegalTransition is AgentIllegalTransition
    assert IllegalTransition.code == "ILLEGAL_TRANSITION"


def test_the_terminal_phases_are_the_four_endings_and_allow_no_move() -> None:
    assert {P.SUCCEEDED, P.FAILED, P.CANCELED, P.TIMED_OUT} == TERMINAL
    for phase in RunPhase:
        assert is_terminal(phase) is (phase in TERMINAL)
        assert (TRANSITIONS[phase] == frozenset()) is (phase in TERMINAL)


def test_every_phase_that_is_not_terminal_can_be_canceled_timed_out_or_failed() -> None:
    for phase in set(RunPhase) - TERMINAL:
        assert {P.CANCELED, P.TIMED_OUT, P.FAILED} <= TRANSITIONS[phase]


def test_only_a_running_run_succeeds() -> None:
    assert [p for p in RunPhase if P.SUCCEEDED in TRANSITIONS[p]] == [P.RUNNING]


def test_the_first_dispatch_is_attempt_one_and_each_redelivery_adds_one() -> None:
    assert attempt_after(P.PENDING, P.DISPATCHED, 0) == 1
    assert attempt_after(P.DISPATCHED, P.RUNNING, 1) == 1
    assert attempt_after(P.RUNNING, P.DISPATCHED, 1) == 2
    assert attempt_after(P.RUNNING, P.INPUT_REQUIRED, 2) == 2
    assert attempt_after(P.RUNNING, P.SUCCEEDED, 2) == 2


def test_the_attempt_of_an_illegal_move_is_refused() -> None:
    with pytest.raises(IllegalTransition):
        attempt_after(P.SUCCEEDED, P.DISPATCHED, 1)


def test_every_phase_maps_to_an_a2a_task_state() -> None:
    assert {p: a2a_state(p) for p in RunPhase} == {
        P.PENDING: A2ATaskState.SUBMITTED,
        P.DISPATCHED: A2ATaskState.SUBMITTED,
        P.RUNNING: A2ATaskState.WORKING,
        P.INPUT_REQUIRED: A2ATaskState.INPUT_REQUIRED,
        P.SUCCEEDED: A2ATaskState.COMPLETED,
        P.FAILED: A2ATaskState.FAILED,
        P.CANCELED: A2ATaskState.CANCELED,
        P.TIMED_OUT: A2ATaskState.FAILED,
    }


def test_a_run_the_agent_rejected_is_an_a2a_rejected_task() -> None:
    assert a2a_state(P.FAILED, RunReason.REJECTED) is A2ATaskState.REJECTED
    assert a2a_state(P.FAILED, RunReason.DELIVERY_EXHAUSTED) is A2ATaskState.FAILED
    assert a2a_state(P.CANCELED, RunReason.REJECTED) is A2ATaskState.CANCELED


def test_the_a2a_states_are_the_protocols_names() -> None:
    assert [str(s) for s in A2ATaskState] == [
        "submitted",
        "working",
        "input-required",
        "completed",
        "failed",
        "canceled",
        "rejected",
    ]


def test_phases_and_reasons_are_camel_case() -> None:
    for name in [*RunPhase, *RunReason]:
        assert name[0].isupper() and "_" not in name and " " not in name, name
