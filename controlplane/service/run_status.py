"""One phase change of a run, as every writer makes it (the API, the gateway, the run
controller): the domain's check, the row, the phase event and the audit entry, in the caller's
UnitOfWork (architecture/runs.md)."""

from __future__ import annotations

from typing import Any

from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.events.envelope import NewEvent, rfc3339, utcnow
from controlplane.domain.runs.lifecycle import RunPhase, check_transition, is_terminal
from controlplane.domain.runs.model import RunRecord

AGGREGATE = "run"

# The outbox event of each phase a run moves to (the schemas in domain/events/schemas/).
PHASE_EVENTS: dict[RunPhase, str] = {
    RunPhase.DISPATCHED: "run.dispatched",
    RunPhase.RUNNING: "run.started",
    RunPhase.INPUT_REQUIRED: "run.input_required",
    RunPhase.SUCCEEDED: "run.succeeded",
    RunPhase.FAILED: "run.failed",
    RunPhase.CANCELED: "run.canceled",
    RunPhase.TIMED_OUT: "run.timed_out",
}


def run_event(record: RunRecord, event_type: str, payload: dict[str, Any]) -> NewEvent:
    """An event of the run's aggregate, naming the run's agent (by uid) and tenant."""
    return NewEvent(
        event_type=event_type,
        aggregate_type=AGGREGATE,
        aggregate_id=record.id,
        tenant_id=record.tenant,
        agent_id=record.agent_id,
        payload={"name": record.name, "agent": record.agent, **payload},
    )


async def move_run(
    uow: UnitOfWork,
    record: RunRecord,
    to_phase: RunPhase,
    reason: str,
    message: str = "",
    **changes: Any,
) -> RunRecord:
    """Move `record` to `to_phase` with `reason`/`message` and the other status fields in
    `changes` (e.g. `attempt`, `output`, `error`); a terminal phase stamps `finishedAt`.
    Writes the row, the phase event and an audit entry; does not commit.

    Raises IllegalTransition (the domain's table), Conflict (a concurrent writer)."""
    check_transition(record.phase, to_phase)
    fields: dict[str, Any] = {"phase": to_phase, "reason": reason, "message": message, **changes}
    if is_terminal(to_phase):
        fields.setdefault("finishedAt", rfc3339(utcnow()))
    status = record.status.model_copy(update=fields)
    moved = await uow.runs.set_phase(record, status)
    event = await uow.outbox.add(
        run_event(
            moved,
            PHASE_EVENTS[to_phase],
            {
                "from_phase": str(record.phase),
                "to_phase": str(to_phase),
                "reason": reason,
                "message": message,
                "attempt": moved.status.attempt,
                "run": moved.to_object(),
            },
        )
    )
    await uow.audit.record(
        "run.transition",
        f"tenants/{moved.tenant}/runs/{moved.name}",
        tenant=moved.tenant,
        event_id=event.event_id,
        details={"from": str(record.phase), "to": str(to_phase), "reason": reason},
    )
    return moved
