"""Use cases on agents, shared by REST, gRPC, the operator, the CLI and the controller.

Every change is one UnitOfWork: the agent row, a transition row (for phase changes), the
outbox event and an audit entry commit together or not at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from controlplane.data.repositories.audit import AuditEntry
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.agents.lifecycle import (
    Condition,
    IllegalTransition,
    Phase,
    check_transition,
    set_condition,
)
from controlplane.domain.agents.model import Agent, AgentStatus, parse_agent
from controlplane.domain.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    FieldError,
    ValidationFailed,
)
from controlplane.domain.events.envelope import NewEvent, parse_rfc3339, utcnow
from controlplane.domain.records import AgentRecord, StoredEvent
from controlplane.observability.tracing import traced
from controlplane.service.idempotency import IdempotencyRequest
from controlplane.service.idempotency import begin as idempotency_begin
from controlplane.service.idempotency import remember as idempotency_remember

AGGREGATE = "agent"
# An agent mirrored from an Agent custom resource carries the resource's uid and the
# generation last applied (Kubernetes: metadata.uid, metadata.generation).
KUBERNETES_UID = "agentos.io/kubernetes-uid"
KUBERNETES_GENERATION = "agentos.io/kubernetes-generation"


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
    Commits.

    The tenant is created on first use. Raises ValidationFailed (bad manifest, or a
    namespace that differs from `tenant`), AlreadyExists (`create_only` and it exists),
    Conflict (stale `expected_resource_version`, or the agent is being deleted).
    """
    result = await _apply(uow, tenant, manifest, create_only, expected_resource_version)
    await uow.commit()
    return result


@traced("service.apply_from_kubernetes")
async def apply_from_kubernetes(
    uow: UnitOfWork, tenant: str, manifest: dict[str, Any], *, uid: str, generation: int
) -> ApplyResult:
    """Apply the Agent custom resource `uid` at `generation` (the operator's use case), keyed
    by uid and generation so a repeated or late delivery changes nothing: a generation at or
    below the one applied is a no-op. Commits.

    Raises as `apply_agent`, and Conflict when the name is held by an agent of another
    resource (an earlier one of that name still being deleted: retry) or by one not made
    from Kubernetes (AlreadyExists: Kubernetes does not adopt it).
    """
    name = str((manifest.get("metadata") or {}).get("name", ""))
    existing = await uow.agents.find(tenant, name) if name else None
    if existing is not None:
        held = existing.annotations.get(KUBERNETES_UID)
        if held is None:
            raise AlreadyExists(
                f"agent {name!r} in tenant {tenant!r} exists and was not made from Kubernetes"
            )
        if held != uid:
            raise Conflict(f"agent {name!r} still belongs to an earlier Agent (uid {held})")
        if int(existing.annotations.get(KUBERNETES_GENERATION, "0")) >= generation:
            await uow.commit()
            return ApplyResult(existing, created=False, changed=False)
    metadata = dict(manifest.get("metadata") or {})
    metadata["annotations"] = {
        **(metadata.get("annotations") or {}),
        KUBERNETES_UID: uid,
        KUBERNETES_GENERATION: str(generation),
    }
    return await apply_agent(uow, tenant, {**manifest, "metadata": metadata})


@dataclass(frozen=True)
class CreateResult:
    """The response of a create: the agent as a manifest, its id, and whether it is the
    replay of an earlier request with the same idempotency key (then `agent_id` is None:
    nothing changed)."""

    body: dict[str, Any]
    agent_id: str | None
    replayed: bool


async def create_agent(
    uow: UnitOfWork,
    tenant: str,
    manifest: dict[str, Any],
    *,
    idempotency: IdempotencyRequest | None = None,
) -> CreateResult:
    """Create an agent (never update). With `idempotency`, the first response to the key is
    stored in this UnitOfWork and replayed to a repeated request (see service.idempotency).
    Commits.

    Raises as `apply_agent` with `create_only`, and IdempotencyKeyInUse,
    IdempotencyKeyReused.
    """
    if idempotency is not None:
        stored = await idempotency_begin(uow, idempotency)
        if stored is not None:
            await uow.commit()
            return CreateResult(stored.body, None, replayed=True)
    result = await _apply(uow, tenant, manifest, True, None)
    body = result.agent.to_manifest()
    if idempotency is not None:
        await idempotency_remember(uow, idempotency, 201, body)
    await uow.commit()
    return CreateResult(body, result.agent.id, replayed=False)


async def _apply(
    uow: UnitOfWork,
    tenant: str,
    manifest: dict[str, Any],
    create_only: bool,
    expected_resource_version: str | None,
) -> ApplyResult:
    agent = parse_agent(manifest)
    if agent.metadata.namespace not in (None, tenant):
        # As Kubernetes answers it: 400, the body contradicts the URL.
        raise BadRequest(
            f"metadata.namespace {agent.metadata.namespace!r} does not match tenant {tenant!r}",
            errors=[FieldError("/metadata/namespace", f"must be {tenant!r} or absent")],
        )
    await _ensure_tenant(uow, tenant)
    if create_only:
        # A taken name fails the insert (AlreadyExists): one round trip fewer than a read.
        (record,) = await _create(uow, tenant, [agent])
        return ApplyResult(record, created=True, changed=True)
    name = agent.metadata.name
    existing = await uow.agents.find(tenant, name)
    if existing is not None:
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
        return ApplyResult(updated, created=False, changed=True)

    (record,) = await _create(uow, tenant, [agent])
    return ApplyResult(record, created=True, changed=True)


async def _ensure_tenant(uow: UnitOfWork, tenant: str) -> None:
    """Create `tenant` with no quota on first use, with its event."""
    if await uow.tenants.ensure(tenant):
        ev = await uow.outbox.add(
            NewEvent("tenant.created", "tenant", tenant, tenant, {"name": tenant, "quota": {}})
        )
        await uow.audit.record(
            "tenant.create", f"tenants/{tenant}", tenant=tenant, event_id=ev.event_id
        )


@traced("service.create_agents")
async def create_agents(
    uow: UnitOfWork, tenant: str, manifests: Sequence[dict[str, Any]]
) -> list[AgentRecord]:
    """Create every agent of `manifests` in `tenant`, all or none, in one round of statements
    whatever their number (a bulk create, as `kubectl create -f DIR` but atomic). Commits.

    Raises ValidationFailed (pointers are prefixed with the manifest's index, e.g.
    `/3/spec/image`), AlreadyExists (any name taken; nothing is created).
    """
    parsed: list[Agent] = []
    problems: list[FieldError] = []
    for i, manifest in enumerate(manifests):
        try:
            agent = parse_agent(manifest)
        except ValidationFailed as exc:
            problems += [FieldError(f"/{i}{e.pointer}", e.message) for e in exc.errors]
            continue
        if agent.metadata.namespace not in (None, tenant):
            problems.append(FieldError(f"/{i}/metadata/namespace", f"must be {tenant!r} or absent"))
        parsed.append(agent)
    if problems:
        detail = "; ".join(f"{e.pointer}: {e.message}" for e in problems)
        raise ValidationFailed(f"invalid Agents: {detail}", errors=problems)
    await _ensure_tenant(uow, tenant)
    records = await _create(uow, tenant, parsed)
    await uow.commit()
    return records


async def _create(uow: UnitOfWork, tenant: str, parsed: Sequence[Agent]) -> list[AgentRecord]:
    """Insert agents in phase Created with their events, history and audit entries."""
    now = utcnow()
    records = [
        AgentRecord(
            id=str(uuid.uuid4()),
            tenant=tenant,
            name=agent.metadata.name,
            labels=agent.metadata.labels,
            annotations=agent.metadata.annotations,
            spec=agent.spec,
            status=AgentStatus(
                phase=Phase.CREATED,
                reason="Created",
                message="accepted",
                runtimeClass=agent.spec.runtime.class_,
            ),
            generation=1,
            resource_version=1,
            created_at=now,
            deletion_requested_at=None,
        )
        for agent in parsed
    ]
    await uow.agents.add_many(records)
    events: list[NewEvent] = []
    for record in records:
        payload = {"name": record.name, "generation": 1}
        spec = record.spec.model_dump(mode="json", by_alias=True)
        events.append(_event(record, "agent.created", {**payload, "spec": spec}))
        events.append(
            _event(
                record,
                "agent.phase_changed",
                {
                    "name": record.name,
                    "from_phase": None,
                    "to_phase": Phase.CREATED,
                    "reason": "Created",
                    "message": "accepted",
                },
            )
        )
    written = await uow.outbox.add_many(events)
    await uow.agents.add_transitions(
        [
            (record, None, Phase.CREATED, "Created", "accepted", phase_event.event_id)
            for record, phase_event in zip(records, written[1::2], strict=True)
        ]
    )
    await uow.audit.record_many(
        [
            AuditEntry(
                "agent.create",
                f"tenants/{tenant}/agents/{record.name}",
                tenant,
                created.event_id,
            )
            for record, created in zip(records, written[0::2], strict=True)
        ]
    )
    return records


@dataclass(frozen=True)
class StatusChange:
    """New status fields for one agent. With `to_phase`, a phase transition: checked against
    the transition table, and recorded with a history row, an `agent.phase_changed` event and
    an audit entry. Without, a plain status write (no event)."""

    record: AgentRecord
    changes: dict[str, Any] = field(default_factory=dict)
    to_phase: Phase | None = None
    reason: str = ""
    message: str = ""


@traced("service.change_statuses")
async def change_statuses(
    uow: UnitOfWork, changes: Sequence[StatusChange]
) -> list[AgentRecord | IllegalTransition | Conflict]:
    """Apply `changes` in a fixed number of statements whatever their number (group commit
    of the controller). Returns, in order, each agent as stored, or the error of a change
    that could not apply (an illegal transition, a stale resourceVersion); those write
    nothing and the rest still apply. Does not commit."""
    results: list[AgentRecord | IllegalTransition | Conflict] = []
    writes: list[tuple[int, StatusChange, AgentStatus]] = []
    for change in changes:
        record, update = change.record, dict(change.changes)
        if change.to_phase is not None:
            try:
                check_transition(record.phase, change.to_phase)
            except IllegalTransition as exc:
                results.append(exc)
                continue
            update.update(phase=change.to_phase, reason=change.reason, message=change.message)
        status = record.status.model_copy(update=update)
        results.append(record)
        if change.to_phase is not None or status != record.status:
            writes.append((len(results) - 1, change, status))
    saved = await uow.agents.save_statuses([(c.record, status) for _, c, status in writes])
    moved: list[tuple[StatusChange, AgentRecord]] = []
    for (index, change, _), outcome in zip(writes, saved, strict=True):
        results[index] = outcome
        if change.to_phase is not None and isinstance(outcome, AgentRecord):
            moved.append((change, outcome))
    events = await uow.outbox.add_many(
        [
            replace(
                _event(
                    saved_record,
                    "agent.phase_changed",
                    {
                        "name": saved_record.name,
                        "from_phase": change.record.phase,
                        "to_phase": change.to_phase,
                        "reason": change.reason,
                        "message": change.message,
                    },
                ),
                # v2 adds Suspended to v1's closed enum; every other move stays v1.
                schema_version=2 if change.to_phase is Phase.SUSPENDED else 1,
            )
            for change, saved_record in moved
        ]
    )
    await uow.agents.add_transitions(
        [
            (saved_record, c.record.phase, str(c.to_phase), c.reason, c.message, ev.event_id)
            for (c, saved_record), ev in zip(moved, events, strict=True)
        ]
    )
    await uow.audit.record_many(
        [
            AuditEntry(
                "agent.transition",
                f"tenants/{c.record.tenant}/agents/{c.record.name}",
                c.record.tenant,
                ev.event_id,
                {"from": c.record.phase, "to": c.to_phase, "reason": c.reason},
            )
            for (c, _), ev in zip(moved, events, strict=True)
        ]
    )
    return results


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
    change = StatusChange(record, status_changes, to_phase, reason, message)
    return _one(await change_statuses(uow, [change]))


async def update_status(uow: UnitOfWork, record: AgentRecord, **changes: Any) -> AgentRecord:
    """Change status fields without a phase change (no event). Raises Conflict. Does not
    commit."""
    return _one(await change_statuses(uow, [StatusChange(record, changes)]))


def _one(results: list[AgentRecord | IllegalTransition | Conflict]) -> AgentRecord:
    (result,) = results
    if isinstance(result, Exception):
        raise result
    return result


@traced("service.delete_agent")
async def delete_agent(
    uow: UnitOfWork, tenant: str, name: str, *, expected_resource_version: str | None = None
) -> AgentRecord:
    """Request deletion: the agent goes to Terminating; the controller removes its sandbox
    and then the record (finalizer semantics). Raises AgentNotFound, Conflict (stale
    `expected_resource_version`)."""
    record = await uow.agents.get(tenant, name)
    if expected_resource_version is not None and expected_resource_version != str(
        record.resource_version
    ):
        raise Conflict(
            f"agent {name!r} is at resourceVersion {record.resource_version}, "
            f"not {expected_resource_version}"
        )
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
    await uow.credentials.revoke_agent(record.id)
    await uow.agents.remove(record)
    await uow.commit()


@traced("service.agent_events")
async def agent_events(uow: UnitOfWork, tenant: str, name: str) -> list[StoredEvent]:
    """The agent's events in sequence order, with their delivery state. Raises
    AgentNotFound."""
    record = await uow.agents.get(tenant, name)
    return await uow.events.of_aggregate(AGGREGATE, record.id)
