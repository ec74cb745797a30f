"""Use cases on agents, shared by REST, gRPC, the operator, the CLI and the controller.

Every change is one UnitOfWork: the agent row, a transition row (for phase changes), the
outbox event and an audit entry commit together or not at all.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.agent import AgentStatus, parse_agent
from controlplane.domain.errors import AlreadyExists, Conflict, FieldError, ValidationFailed
from controlplane.domain.events import NewEvent, parse_rfc3339, utcnow
from controlplane.domain.lifecycle import Condition, Phase, check_transition, set_condition
from controlplane.domain.records import AgentRecord
from controlplane.observability.tracing import traced

AGGREGATE = "agent"


@dataclass(frozen=True)
class ApplyResult:
    agent: AgentRecord
    created: bool
    changed: bool


def _event(record: AgentRecord, event_type: str, payload: dict[str, Any]) -> NewEvent:
    return NewEvent(
        event_type=event_type,
        aggregate_type=AGGREGATE,
        aggregate_id=record.id,
        tenant_id=record.tenant,
        agent_id=record.id,
        payload=payload,
    )


def condition(
    type_: str, status: str, reason: str, message: str, generation: int
) -> dict[str, Any]:
    """A condition as stored in `status.conditions` (see lifecycle.Condition)."""
    return Condition(type_, status, reason, message, utcnow(), generation).to_dict()


def merge_condition(status: AgentStatus, new: dict[str, Any]) -> list[dict[str, Any]]:
    """`status.conditions` with `new` merged by type; lastTransitionTime moves only when the
    condition's status changes (Kubernetes API conventions)."""

    def parse(c: dict[str, Any]) -> Condition:
        return Condition(
            c["type"],
            c["status"],
            c["reason"],
            c["message"],
            parse_rfc3339(c["lastTransitionTime"]),
            c["observedGeneration"],
        )

    merged = set_condition([parse(c) for c in status.conditions], parse(new))
    return [c.to_dict() for c in merged]


@traced("service.apply_agent")
async def apply_agent(
    uow: UnitOfWork,
    tenant: str,
    manifest: dict[str, Any],
    *,
    create_only: bool = False,
    expected_resource_version: str | None = None,
) -> ApplyResult:
    """Create the agent of `manifest` in `tenant`, or update its spec (generation + 1).

    The tenant is created on first use. Raises ValidationFailed (bad manifest, or a
    namespace that differs from `tenant`), AlreadyExists (`create_only` and it exists),
    Conflict (stale `expected_resource_version`).
    """
    agent = parse_agent(manifest)
    if agent.metadata.namespace not in (None, tenant):
        raise ValidationFailed(
            f"metadata.namespace {agent.metadata.namespace!r} does not match tenant {tenant!r}",
            errors=[FieldError("/metadata/namespace", f"must be {tenant!r} or absent")],
        )
    if await uow.tenants.ensure(tenant):
        ev = await uow.outbox.add(
            NewEvent("tenant.created", "tenant", tenant, tenant, {"name": tenant, "quota": {}})
        )
        await uow.audit.record(
            "tenant.create", f"tenants/{tenant}", tenant=tenant, event_id=ev.event_id
        )
    name = agent.metadata.name
    existing = await uow.agents.find(tenant, name)
    if existing is not None:
        if create_only:
            raise AlreadyExists(f"agent {name!r} already exists in tenant {tenant!r}")
        if expected_resource_version is not None and expected_resource_version != str(
            existing.resource_version
        ):
            raise Conflict(
                f"agent {name!r} is at resourceVersion {existing.resource_version}, "
                f"not {expected_resource_version}"
            )
        if existing.deletion_requested_at is not None:
            raise Conflict(f"agent {name!r} is being deleted")
        same_spec = existing.spec == agent.spec
        same_meta = (existing.labels, existing.annotations) == (
            agent.metadata.labels,
            agent.metadata.annotations,
        )
        if same_spec and same_meta:
            await uow.commit()
            return ApplyResult(existing, created=False, changed=False)
        updated = await uow.agents.save(
            existing,
            spec=agent.spec,
            labels=agent.metadata.labels,
            annotations=agent.metadata.annotations,
            bump_generation=not same_spec,
        )
        event = await uow.outbox.add(
            _event(
                updated,
                "agent.updated",
                {
                    "name": name,
                    "generation": updated.generation,
                    "spec": agent.spec.model_dump(mode="json", by_alias=True),
                },
            )
        )
        await uow.audit.record(
            "agent.update",
            f"tenants/{tenant}/agents/{name}",
            tenant=tenant,
            event_id=event.event_id,
            details={"generation": updated.generation},
        )
        await uow.commit()
        return ApplyResult(updated, created=False, changed=True)

    agent_id = str(uuid.uuid4())
    status = AgentStatus(
        phase=Phase.CREATED,
        reason="Created",
        message="accepted",
        runtimeClass=agent.spec.runtime.class_,
    )
    record = await uow.agents.add(
        agent_id,
        tenant,
        name,
        agent.metadata.labels,
        agent.metadata.annotations,
        agent.spec,
        status,
    )
    created = await uow.outbox.add(
        _event(
            record,
            "agent.created",
            {
                "name": name,
                "generation": 1,
                "spec": agent.spec.model_dump(mode="json", by_alias=True),
            },
        )
    )
    phase_event = await uow.outbox.add(
        _event(
            record,
            "agent.phase_changed",
            {
                "name": name,
                "from_phase": None,
                "to_phase": Phase.CREATED,
                "reason": "Created",
                "message": "accepted",
            },
        )
    )
    await uow.agents.add_transition(
        record, None, Phase.CREATED, "Created", "accepted", phase_event.event_id
    )
    await uow.audit.record(
        "agent.create", f"tenants/{tenant}/agents/{name}", tenant=tenant, event_id=created.event_id
    )
    await uow.commit()
    return ApplyResult(record, created=True, changed=True)


@traced("service.transition")
async def transition(
    uow: UnitOfWork,
    record: AgentRecord,
    to_phase: Phase,
    reason: str,
    message: str = "",
    **status_changes: Any,
) -> AgentRecord:
    """Move `record` to `to_phase` (checked against the transition table), with status
    changes, a transition row, an `agent.phase_changed` event and an audit entry.

    Raises IllegalTransition, Conflict (the record is stale). Does not commit.
    """
    check_transition(record.phase, to_phase)
    status = record.status.model_copy(
        update={"phase": to_phase, "reason": reason, "message": message, **status_changes}
    )
    saved = await uow.agents.save(record, status=status)
    event = await uow.outbox.add(
        _event(
            saved,
            "agent.phase_changed",
            {
                "name": record.name,
                "from_phase": record.phase,
                "to_phase": to_phase,
                "reason": reason,
                "message": message,
            },
        )
    )
    await uow.agents.add_transition(saved, record.phase, to_phase, reason, message, event.event_id)
    await uow.audit.record(
        "agent.transition",
        f"tenants/{record.tenant}/agents/{record.name}",
        tenant=record.tenant,
        event_id=event.event_id,
        details={"from": record.phase, "to": to_phase, "reason": reason},
    )
    return saved


async def update_status(uow: UnitOfWork, record: AgentRecord, **changes: Any) -> AgentRecord:
    """Change status fields without a phase change (no event). Does not commit."""
    status = record.status.model_copy(update=changes)
    if status == record.status:
        return record
    return await uow.agents.save(record, status=status)


@traced("service.delete_agent")
async def delete_agent(uow: UnitOfWork, tenant: str, name: str) -> AgentRecord:
    """Request deletion: the agent goes to Terminating; the controller removes its sandbox
    and then the record (finalizer semantics). Raises NotFound."""
    record = await uow.agents.get(tenant, name)
    if record.phase is Phase.TERMINATING:
        await uow.commit()
        return record
    marked = await uow.agents.save(record, deletion_requested=True)
    saved = await transition(
        uow, marked, Phase.TERMINATING, "DeletionRequested", "deletion requested"
    )
    await uow.commit()
    return saved


@traced("service.finalize_deletion")
async def finalize_deletion(uow: UnitOfWork, record: AgentRecord) -> None:
    """The sandbox is gone: write `agent.deleted` and remove the record. Commits."""
    event = await uow.outbox.add(_event(record, "agent.deleted", {"name": record.name}))
    await uow.agents.add_transition(
        record, record.phase, "Deleted", "SandboxRemoved", "record removed", event.event_id
    )
    await uow.audit.record(
        "agent.delete",
        f"tenants/{record.tenant}/agents/{record.name}",
        tenant=record.tenant,
        event_id=event.event_id,
    )
    await uow.agents.remove(record)
    await uow.commit()
