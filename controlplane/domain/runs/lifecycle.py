"""The run lifecycle: phases, the transition table, reasons, attempts and A2A task states.

Pure: no I/O, no framework. The service layer and the run reconciler decide *when* a run
moves; this module says *whether* the move is legal and what follows from it
(architecture/state-machines.md, "Run lifecycle").

    Pending → Dispatched → Running → Succeeded
        Running → Dispatched           a delivery is retried (attempt + 1)
        Running ⇄ InputRequired        waiting for a human (an approval)
        any non-terminal → Failed | Canceled | TimedOut
        Succeeded, Failed, Canceled, TimedOut are terminal: they never change

`Pending → Failed` is allowed: a run can fail before it was ever delivered, when its dispatch
message is dead-lettered by the relay (`DispatchFailed`), its agent is deleted while the run
waits (`AgentDeleted`), or the agent refuses it (`Rejected`).
"""

from __future__ import annotations

from enum import StrEnum

from controlplane.domain.agents.lifecycle import IllegalTransition

__all__ = [
    "A2A_STATE",
    "NON_TERMINAL",
    "TERMINAL",
    "TRANSITIONS",
    "A2ATaskState",
    "IllegalTransition",
    "RunPhase",
    "RunReason",
    "a2a_state",
    "attempt_after",
    "check_transition",
    "is_terminal",
]


class RunPhase(StrEnum):
    """Where a run is (Kubernetes `status.phase` style, CamelCase)."""

    PENDING = "Pending"
    DISPATCHED = "Dispatched"
    RUNNING = "Running"
    INPUT_REQUIRED = "InputRequired"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELED = "Canceled"
    TIMED_OUT = "TimedOut"


TERMINAL: frozenset[RunPhase] = frozenset(
    {RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.CANCELED, RunPhase.TIMED_OUT}
)
# The phases of a run still under way (every one but the terminal ones).
NON_TERMINAL: tuple[RunPhase, ...] = tuple(p for p in RunPhase if p not in TERMINAL)

# Every phase that is not terminal may end the run this way, whatever the agent does.
_ENDINGS = frozenset({RunPhase.FAILED, RunPhase.CANCELED, RunPhase.TIMED_OUT})

TRANSITIONS: dict[RunPhase, frozenset[RunPhase]] = {
    RunPhase.PENDING: frozenset({RunPhase.DISPATCHED}) | _ENDINGS,
    RunPhase.DISPATCHED: frozenset({RunPhase.RUNNING}) | _ENDINGS,
    RunPhase.RUNNING: frozenset({RunPhase.DISPATCHED, RunPhase.INPUT_REQUIRED, RunPhase.SUCCEEDED})
    | _ENDINGS,
    RunPhase.INPUT_REQUIRED: frozenset({RunPhase.RUNNING}) | _ENDINGS,
    RunPhase.SUCCEEDED: frozenset(),
    RunPhase.FAILED: frozenset(),
    RunPhase.CANCELED: frozenset(),
    RunPhase.TIMED_OUT: frozenset(),
}


class RunReason(StrEnum):
    """Why a run is in its phase (`status.reason`, CamelCase as Kubernetes reasons are)."""

    CREATED = "Created"  # → Pending
    DISPATCHED = "Dispatched"  # → Dispatched: the dispatch message is Published
    REDELIVERED = "Redelivered"  # Running → Dispatched: the ack wait ran out or the handler died
    STARTED = "Started"  # → Running: the SDK's handler took the delivery
    APPROVAL_REQUESTED = "ApprovalRequested"  # → InputRequired
    APPROVAL_DECIDED = "ApprovalDecided"  # InputRequired → Running
    COMPLETED = "Completed"  # → Succeeded
    HANDLER_ERROR = "HandlerError"  # → Failed: the handler raised and will not be retried
    DELIVERY_EXHAUSTED = "DeliveryExhausted"  # → Failed: maxAttempts deliveries; dead-lettered
    DISPATCH_FAILED = "DispatchFailed"  # Pending → Failed: the relay dead-lettered the message
    AGENT_DELETED = "AgentDeleted"  # → Failed: the agent went away before the run ended
    REJECTED = "Rejected"  # → Failed: the agent refused the run (A2A `rejected`)
    CANCELED_BY_USER = "CanceledByUser"  # → Canceled
    TIMEOUT = "Timeout"  # → TimedOut: timeoutSeconds passed since creation


def check_transition(current: RunPhase, target: RunPhase) -> None:
    """Raise IllegalTransition (code ILLEGAL_TRANSITION, HTTP 409) unless `current → target`
    is in TRANSITIONS. A terminal phase allows no move at all, not even to itself."""
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(current, target)


def is_terminal(phase: RunPhase) -> bool:
    """Whether `phase` ends the run (Succeeded, Failed, Canceled, TimedOut)."""
    return phase in TERMINAL


def attempt_after(current: RunPhase, target: RunPhase, attempt: int) -> int:
    """`status.attempt` after the (legal) move `current → target`.

    `attempt` counts deliveries: 0 while Pending, 1 from the first dispatch, + 1 each time a
    Running run goes back to Dispatched for redelivery; every other move keeps it.
    Raises IllegalTransition for a move the table forbids.
    """
    check_transition(current, target)
    if current is RunPhase.PENDING and target is RunPhase.DISPATCHED:
        return 1
    if current is RunPhase.RUNNING and target is RunPhase.DISPATCHED:
        return attempt + 1
    return attempt


class A2ATaskState(StrEnum):
    """The task states of the Agent2Agent protocol (A2A specification, `TaskState`) that a run
    maps onto. `rejected` is a run the agent refused; a run refused at admission (409
    AGENT_BUSY) is never created, and an A2A front end answers it as `rejected` too."""

    SUBMITTED = "submitted"
    WORKING = "working"
    INPUT_REQUIRED = "input-required"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    REJECTED = "rejected"


A2A_STATE: dict[RunPhase, A2ATaskState] = {
    RunPhase.PENDING: A2ATaskState.SUBMITTED,
    RunPhase.DISPATCHED: A2ATaskState.SUBMITTED,
    RunPhase.RUNNING: A2ATaskState.WORKING,
    RunPhase.INPUT_REQUIRED: A2ATaskState.INPUT_REQUIRED,
    RunPhase.SUCCEEDED: A2ATaskState.COMPLETED,
    RunPhase.FAILED: A2ATaskState.FAILED,
    RunPhase.CANCELED: A2ATaskState.CANCELED,
    # A2A has no timeout state: a run that ran out of time failed.
    RunPhase.TIMED_OUT: A2ATaskState.FAILED,
}


def a2a_state(phase: RunPhase, reason: str = "") -> A2ATaskState:
    """The A2A task state of a run in `phase` with `status.reason`: A2A_STATE, except that a
    run Failed with reason `Rejected` is `rejected`."""
    if phase is RunPhase.FAILED and reason == RunReason.REJECTED:
        return A2ATaskState.REJECTED
    return A2A_STATE[phase]
