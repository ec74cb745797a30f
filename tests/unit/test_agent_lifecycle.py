"""The agent lifecycle as a specification (controlplane/domain/agents/lifecycle.py,
architecture/state-machines.md): which phase may follow which, when a failed agent is restarted,
and how long it waits first.

The transition table is pinned twice: once as the list of edges written out below (a change
to the table must change this file), and once as the full Phase-by-Phase matrix derived from
the table, every edge of which `check_transition` must accept or refuse accordingly.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from controlplane.controllers.agents.config import ControllerConfig
from controlplane.controllers.agents.scheduling import restart_delay
from controlplane.domain.agents.lifecycle import (
    TRANSITIONS,
    IllegalTransition,
    Phase,
    RestartPolicy,
    check_transition,
    holds_reservation,
    restart_backoff_s,
    restart_decision,
)
from controlplane.domain.agents.model import AgentStatus, parse_agent
from controlplane.domain.events.envelope import rfc3339
from controlplane.domain.records import AgentRecord

CREATED, SCHEDULED, STARTING, READY, SUSPENDED, FAILED, TERMINATING = (
    Phase.CREATED,
    Phase.SCHEDULED,
    Phase.STARTING,
    Phase.READY,
    Phase.SUSPENDED,
    Phase.FAILED,
    Phase.TERMINATING,
)

# Every allowed move, written out: the happy path, failure, restart, deletion, respec.
ALLOWED: set[tuple[Phase, Phase]] = {
    (CREATED, SCHEDULED),  # admitted: quota and a node hold its requests
    (SCHEDULED, STARTING),  # the sandbox is being made
    (STARTING, READY),  # the readiness probe passed
    (CREATED, FAILED),
    (SCHEDULED, FAILED),
    (STARTING, FAILED),
    (READY, FAILED),
    (FAILED, CREATED),  # a restart starts over from admission
    (SCHEDULED, CREATED),  # the sandbox part of the spec changed
    (STARTING, CREATED),
    (READY, CREATED),
    (CREATED, TERMINATING),  # deletion, from any phase but Terminating itself
    (SCHEDULED, TERMINATING),
    (STARTING, TERMINATING),
    (READY, TERMINATING),
    (FAILED, TERMINATING),
    (READY, SUSPENDED),  # idle for spec.runs.idleSuspendSeconds, or asked to
    (SUSPENDED, STARTING),  # resume: asked, or a run arrived; Ready again after its probe
    (SUSPENDED, FAILED),  # the checkpoint or the restore failed
    (SUSPENDED, TERMINATING),
}

EVERY_EDGE = list(itertools.product(Phase, Phase))
TABLE_EDGES = {(src, dst) for src, targets in TRANSITIONS.items() for dst in targets}


def edge_id(edge: tuple[Phase, Phase]) -> str:
    return f"{edge[0]}->{edge[1]}"


# -- the table ----------------------------------------------------------------------------------


def test_the_phases_are_the_seven_of_the_lifecycle_in_order() -> None:
    assert [str(p) for p in Phase] == [
        "Created",
        "Scheduled",
        "Starting",
        "Ready",
        "Suspended",
        "Failed",
        "Terminating",
    ]


def test_the_table_has_a_row_for_every_phase() -> None:
    assert set(TRANSITIONS) == set(Phase)


def test_the_table_is_exactly_the_allowed_edges_written_here() -> None:
    assert TABLE_EDGES == ALLOWED


# -- every edge of the matrix -------------------------------------------------------------------


@pytest.mark.parametrize("edge", sorted(TABLE_EDGES), ids=edge_id)
def test_an_edge_of_the_table_is_accepted(edge: tuple[Phase, Phase]) -> None:
    check_transition(*edge)


@pytest.mark.parametrize("edge", [e for e in EVERY_EDGE if e not in TABLE_EDGES], ids=edge_id)
def test_an_edge_not_in_the_table_raises_illegal_transition(edge: tuple[Phase, Phase]) -> None:
    with pytest.raises(IllegalTransition) as raised:
        check_transition(*edge)
    assert (raised.value.current, raised.value.target) == edge


def test_the_matrix_covers_forty_nine_edges_twenty_of_them_allowed() -> None:
    assert len(EVERY_EDGE) == 49 and len(TABLE_EDGES) == 20


# -- what the table implies -----------------------------------------------------------------------


def test_no_phase_moves_to_itself() -> None:
    assert all(phase not in TRANSITIONS[phase] for phase in Phase)


def test_terminating_is_final() -> None:
    assert TRANSITIONS[TERMINATING] == frozenset()


def test_every_phase_but_terminating_can_be_deleted() -> None:
    assert {p for p in Phase if TERMINATING in TRANSITIONS[p]} == set(Phase) - {TERMINATING}


def test_ready_is_reached_only_from_starting() -> None:
    assert {src for src, dst in TABLE_EDGES if dst is READY} == {STARTING}


def test_only_a_ready_agent_is_suspended() -> None:
    assert {src for src, dst in TABLE_EDGES if dst is SUSPENDED} == {READY}


def test_a_suspended_agent_resumes_through_starting_never_straight_to_ready() -> None:
    assert TRANSITIONS[SUSPENDED] == frozenset({STARTING, FAILED, TERMINATING})


def test_a_failed_agent_does_not_skip_admission_on_restart() -> None:
    assert TRANSITIONS[FAILED] == frozenset({CREATED, TERMINATING})


def test_the_illegal_transition_error_has_a_stable_code_and_names_both_phases() -> None:
    error = IllegalTransition(READY, SCHEDULED)
    assert error.code == "ILLEGAL_TRANSITION"
    assert str(error) == "illegal transition Ready → Scheduled"


# -- reservations --------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", [SCHEDULED, STARTING, READY, SUSPENDED])
def test_an_admitted_agent_holds_quota_and_node_capacity(phase: Phase) -> None:
    assert holds_reservation(phase)


@pytest.mark.parametrize("phase", [CREATED, FAILED, TERMINATING])
def test_an_agent_not_admitted_or_no_longer_running_holds_nothing(phase: Phase) -> None:
    assert not holds_reservation(phase)


# -- restart decisions (Kubernetes Pod restartPolicy semantics, plus maxRestarts) ----------------


@pytest.mark.parametrize("exit_code", [0, 1, 137, None])
def test_restart_policy_always_restarts_whatever_the_exit(exit_code: int | None) -> None:
    assert restart_decision(RestartPolicy.ALWAYS, 0, 5, exit_code) == (True, "Restarting")


@pytest.mark.parametrize("exit_code", [1, 137])
def test_restart_policy_on_failure_restarts_a_non_zero_exit(exit_code: int) -> None:
    assert restart_decision(RestartPolicy.ON_FAILURE, 0, 5, exit_code) == (True, "Restarting")


def test_restart_policy_on_failure_counts_a_vanished_sandbox_as_a_failure() -> None:
    assert restart_decision(RestartPolicy.ON_FAILURE, 0, 5, None) == (True, "Restarting")


def test_restart_policy_on_failure_leaves_an_agent_that_exited_zero_completed() -> None:
    assert restart_decision(RestartPolicy.ON_FAILURE, 0, 5, 0) == (False, "Completed")


@pytest.mark.parametrize("exit_code", [0, 1, None])
def test_restart_policy_never_never_restarts(exit_code: int | None) -> None:
    assert restart_decision(RestartPolicy.NEVER, 0, 5, exit_code) == (False, "RestartPolicyNever")


def test_restarts_continue_while_the_count_is_below_max_restarts() -> None:
    assert restart_decision(RestartPolicy.ALWAYS, 4, 5, 1) == (True, "Restarting")


def test_restarts_stop_when_the_count_reaches_max_restarts() -> None:
    assert restart_decision(RestartPolicy.ALWAYS, 5, 5, 1) == (False, "MaxRestartsExceeded")


def test_max_restarts_zero_allows_no_restart() -> None:
    assert restart_decision(RestartPolicy.ALWAYS, 0, 0, 1) == (False, "MaxRestartsExceeded")


def test_max_restarts_also_bounds_on_failure() -> None:
    assert restart_decision(RestartPolicy.ON_FAILURE, 3, 3, 1) == (False, "MaxRestartsExceeded")


def test_never_is_reported_before_max_restarts() -> None:
    assert restart_decision(RestartPolicy.NEVER, 9, 5, 1) == (False, "RestartPolicyNever")


def test_completed_is_reported_before_max_restarts() -> None:
    assert restart_decision(RestartPolicy.ON_FAILURE, 9, 5, 0) == (False, "Completed")


def test_the_restart_policies_are_those_of_kubernetes_pods() -> None:
    assert [str(p) for p in RestartPolicy] == ["Always", "OnFailure", "Never"]


# -- restart backoff (CrashLoopBackOff style: base·2^count, capped) ------------------------------


def test_the_first_restart_waits_the_base() -> None:
    assert restart_backoff_s(0, base_s=2.0, max_s=100.0) == 2.0


def test_each_restart_doubles_the_wait() -> None:
    waits = [restart_backoff_s(n, base_s=1.0, max_s=1000.0) for n in range(6)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]


def test_the_wait_is_capped() -> None:
    assert restart_backoff_s(10, base_s=1.0, max_s=60.0) == 60.0


def test_the_cap_holds_for_every_restart_count_max_restarts_allows() -> None:
    assert restart_backoff_s(1_000_000, base_s=1.0, max_s=60.0) == 60.0


def test_the_wait_reaches_the_cap_exactly_and_stays() -> None:
    waits = [restart_backoff_s(n, base_s=10.0, max_s=300.0) for n in range(7)]
    assert waits == [10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0]


def test_the_default_backoff_is_one_second_doubling_to_five_minutes() -> None:
    assert restart_backoff_s(0) == 1.0
    assert restart_backoff_s(8) == 256.0
    assert restart_backoff_s(9) == 300.0


def test_the_wait_is_a_float_of_seconds() -> None:
    assert isinstance(restart_backoff_s(3, base_s=1, max_s=100), float)


# -- the controller's use of the backoff (controllers/agents/reconciler.py) ------------------------


NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


def failed_record(restart_count: int, failed_at: datetime | None) -> AgentRecord:
    agent = parse_agent(
        {
            "apiVersion": "agentos.io/v1alpha1",
            "kind": "Agent",
            "metadata": {"name": "crashy"},
            "spec": {"image": "registry.example/agent:1"},
        }
    )
    status = AgentStatus(
        restartCount=restart_count, failedAt=rfc3339(failed_at) if failed_at else None
    )
    return AgentRecord(
        "id-1", "t", "crashy", {}, {}, agent.spec, status, 1, 1, failed_at or NOW, None
    )


def config(base_s: float = 1.0, max_s: float = 60.0) -> ControllerConfig:
    return ControllerConfig(restart_backoff_base_s=base_s, restart_backoff_max_s=max_s)


def test_the_controllers_restart_backoff_is_one_second_doubling_to_a_minute() -> None:
    config = ControllerConfig()
    assert (config.restart_backoff_base_s, config.restart_backoff_max_s) == (1.0, 60.0)


def test_an_agent_never_restarted_is_admitted_at_once() -> None:
    assert restart_delay(failed_record(0, NOW), NOW, config()) == 0.0


def test_an_agent_without_a_failure_time_is_admitted_at_once() -> None:
    assert restart_delay(failed_record(3, None), NOW, config()) == 0.0


def test_the_first_restart_waits_the_base_after_the_failure() -> None:
    assert restart_delay(failed_record(1, NOW), NOW, config(base_s=2.0)) == 2.0


def test_the_wait_counts_from_the_failure_not_from_now() -> None:
    record = failed_record(3, NOW - timedelta(seconds=1))
    assert restart_delay(record, NOW, config(base_s=1.0)) == 3.0  # 4 s after the failure


def test_a_wait_already_over_is_not_positive() -> None:
    record = failed_record(1, NOW - timedelta(seconds=10))
    assert restart_delay(record, NOW, config(base_s=1.0)) <= 0


def test_the_controllers_wait_is_capped_by_its_config() -> None:
    assert restart_delay(failed_record(20, NOW), NOW, config(base_s=1.0, max_s=60.0)) == 60.0
