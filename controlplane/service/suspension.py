"""Suspend and resume an agent (adr/0019-suspend-resume.md, architecture/state-machines.md).

`suspend_agent` marks a Ready agent `status.suspension.state` "Suspending": the controller
then checkpoints (or stops) its sandbox and only then moves it Ready → Suspended, so a crash
at any point leaves it Ready (still to suspend) or Suspended, never between.
`resume_agent` moves a Suspended agent to Starting with state "Resuming": the controller
restores the sandbox and moves it to Ready. Both are idempotent: suspending a
Suspended agent, or resuming a Starting or Ready one, changes nothing. One function per use
case, called by REST, gRPC and the CLI alike.
"""

from __future__ import annotations

from typing import Any

from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.agents.lifecycle import Phase
from controlplane.domain.errors import Conflict
from controlplane.domain.events.envelope import rfc3339, utcnow
from controlplane.domain.records import AgentRecord
from controlplane.observability.tracing import traced
from controlplane.service.agents import condition, merge_condition, transition, update_status

SUSPENDING = "Suspending"  # asked; the sandbox still runs until the controller checkpoints
SUSPENDED = "Suspended"  # checkpointed (gVisor) or stopped (runc): no process
RESUMING = "Resuming"  # asked; the controller restores it (Starting)


def suspension(state: str, reason: str, record: AgentRecord, **fields: Any) -> dict[str, Any]:
    """`status.suspension`: {state, reason, requestedAt, memoryKept?, imageBytes?} with the
    earlier fields of the record's kept."""
    earlier = dict(record.status.suspension or {})
    return earlier | {"state": state, "reason": reason} | fields


def suspend_changes(record: AgentRecord, reason: str, message: str) -> dict[str, Any]:
    """The status changes of Ready → Suspended (shared with the controller's idle suspend)."""
    return {
        "suspension": {"state": SUSPENDING, "reason": reason, "requestedAt": rfc3339(utcnow())},
        "conditions": merge_condition(
            record.status,
            condition("Suspended", "False", "Suspending", message, record.generation),
        ),
    }


def resume_changes(record: AgentRecord, reason: str, message: str) -> dict[str, Any]:
    """The status changes of Suspended → Starting (shared with the controller's resume when
    a run arrives)."""
    return {
        "suspension": suspension(RESUMING, reason, record),
        "startedAt": rfc3339(utcnow()),
        "conditions": merge_condition(
            record.status,
            condition("Suspended", "False", "Resuming", message, record.generation),
        ),
    }


@traced("service.suspend_agent")
async def suspend_agent(uow: UnitOfWork, tenant: str, name: str) -> AgentRecord:
    """Ask for the agent to be suspended: a Ready agent is marked "Suspending"; the
    controller moves it to Suspended once its sandbox holds no process. Commits. Raises
    AgentNotFound, Conflict (not Ready)."""
    record = await uow.agents.get(tenant, name)
    if record.phase is Phase.SUSPENDED or _state(record) == SUSPENDING:
        await uow.commit()
        return record
    if record.phase is not Phase.READY:
        raise Conflict(f"agent {name!r} is {record.phase}; only a Ready agent is suspended")
    changes = suspend_changes(record, "SuspendRequested", "suspend requested")
    saved = await update_status(uow, record, **changes)
    await uow.commit()
    return saved


def _state(record: AgentRecord) -> str:
    return str((record.status.suspension or {}).get("state", ""))


@traced("service.resume_agent")
async def resume_agent(uow: UnitOfWork, tenant: str, name: str) -> AgentRecord:
    """Ask for a suspended agent to run again: Suspended → Starting; Ready after its probe.
    A Starting or Ready agent is returned as it is. Commits. Raises AgentNotFound, Conflict
    (any other phase)."""
    record = await uow.agents.get(tenant, name)
    if record.phase in (Phase.STARTING, Phase.READY):
        await uow.commit()
        return record
    if record.phase is not Phase.SUSPENDED:
        raise Conflict(f"agent {name!r} is {record.phase}; only a Suspended agent is resumed")
    message = "resume requested"
    saved = await transition(
        uow,
        record,
        Phase.STARTING,
        "ResumeRequested",
        message,
        **resume_changes(record, "ResumeRequested", message),
    )
    await uow.commit()
    return saved
