"""The agent lifecycle of architecture/state-machines.md: phases, the transition table, conditions,
restarts.

Pure: no I/O, no framework. The controller decides *when* to move; this module says
*whether* a move is legal and what follows from it.

    Created → Scheduled → Starting → Ready
        any of them → Failed;  Failed → Created (restart)
        any phase → Terminating (deletion; the record goes when the sandbox is gone)
        Scheduled | Starting | Ready → Created (the sandbox part of the spec changed)
        Ready → Suspended (idle, or asked); Suspended → Starting (resume: asked, or a run
        came) → Ready; Suspended → Failed | Terminating
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from controlplane.domain.events.envelope import rfc3339


class Phase(StrEnum):
    """Where an agent is in its lifecycle (Kubernetes `status.phase` style)."""

    CREATED = "Created"
    SCHEDULED = "Scheduled"
    STARTING = "Starting"
    READY = "Ready"
    SUSPENDED = "Suspended"  # the sandbox checkpointed (or stopped) and holds no process
    FAILED = "Failed"
    TERMINATING = "Terminating"


TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.CREATED: frozenset({Phase.SCHEDULED, Phase.FAILED, Phase.TERMINATING}),
    Phase.SCHEDULED: frozenset({Phase.STARTING, Phase.FAILED, Phase.TERMINATING, Phase.CREATED}),
    Phase.STARTING: frozenset({Phase.READY, Phase.FAILED, Phase.TERMINATING, Phase.CREATED}),
    Phase.READY: frozenset({Phase.FAILED, Phase.TERMINATING, Phase.CREATED, Phase.SUSPENDED}),
    Phase.SUSPENDED: frozenset({Phase.STARTING, Phase.FAILED, Phase.TERMINATING}),
    Phase.FAILED: frozenset({Phase.CREATED, Phase.TERMINATING}),
    Phase.TERMINATING: frozenset(),
}


class IllegalTransition(Exception):
    """A move the transition table does not allow (of an agent, or of a run: the phases of
    controlplane/domain/runs/lifecycle.py raise it too)."""

    code = "ILLEGAL_TRANSITION"

    def __init__(self, current: StrEnum, target: StrEnum) -> None:
        super().__init__(f"illegal transition {current} → {target}")
        self.current = current
        self.target = target


def check_transition(current: Phase, target: Phase) -> None:
    """Raise IllegalTransition unless `current → target` is in the table."""
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(current, target)


def holds_reservation(phase: Phase) -> bool:
    """Whether an agent in `phase` holds quota and node capacity (Scheduled onwards). A
    Suspended agent keeps its reservation, so its resume never waits for capacity."""
    return phase in (Phase.SCHEDULED, Phase.STARTING, Phase.READY, Phase.SUSPENDED)


@dataclass(frozen=True)
class Condition:
    """A Kubernetes-style condition (API conventions: type, status, reason, message,
    lastTransitionTime, observedGeneration). `status` is "True", "False" or "Unknown"."""

    type: str
    status: str
    reason: str
    message: str
    last_transition_time: datetime
    observed_generation: int

    def to_dict(self) -> dict[str, object]:
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": rfc3339(self.last_transition_time),
            "observedGeneration": self.observed_generation,
        }


def set_condition(conditions: list[Condition], new: Condition) -> list[Condition]:
    """Conditions with `new` merged in by type. `lastTransitionTime` moves only when the
    status changes (Kubernetes API conventions)."""
    result: list[Condition] = []
    found = False
    for c in conditions:
        if c.type != new.type:
            result.append(c)
            continue
        found = True
        if c.status == new.status:
            result.append(replace(new, last_transition_time=c.last_transition_time))
        else:
            result.append(new)
    if not found:
        result.append(new)
    return result


class RestartPolicy(StrEnum):
    """When a failed agent is started again (Kubernetes Pod restartPolicy semantics)."""

    ALWAYS = "Always"
    ON_FAILURE = "OnFailure"
    NEVER = "Never"


def restart_decision(
    policy: RestartPolicy, restart_count: int, max_restarts: int, exit_code: int | None
) -> tuple[bool, str]:
    """Whether to restart a failed agent, and the reason if not.

    `exit_code` None means the sandbox did not exit on its own (it stopped answering or
    vanished), which counts as a failure. Returns (restart?, reason).
    """
    if policy is RestartPolicy.NEVER:
        return False, "RestartPolicyNever"
    if policy is RestartPolicy.ON_FAILURE and exit_code == 0:
        return False, "Completed"
    if restart_count >= max_restarts:
        return False, "MaxRestartsExceeded"
    return True, "Restarting"


def restart_backoff_s(restart_count: int, base_s: float = 1.0, max_s: float = 300.0) -> float:
    """Delay before restart number `restart_count + 1`: base·2^count, capped (CrashLoopBackOff
    style, Kubernetes kubelet: 10 s doubling to 5 min; our base is configurable). The
    exponent is bounded so a large count stays at the cap instead of overflowing."""
    return float(min(max_s, base_s * (2.0 ** min(restart_count, 64))))
