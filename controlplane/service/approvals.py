"""Use cases on approvals (architecture/approvals.md): an agent asks (the gateway), a human
decides (REST, gRPC, CLI), the run controller expires the late ones.

A run with a pending approval is `InputRequired`; once none is pending it is `Running`
again. Every change is one UnitOfWork with the run's phase event and an audit entry naming
the principal.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import Field, JsonValue, ValidationError

from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.agents.model import Strict, field_errors, refuse_unstorable
from controlplane.domain.errors import (
    ApprovalNotFound,
    BadRequest,
    FieldError,
    RunFinished,
    RunNotFound,
    ValidationFailed,
)
from controlplane.domain.events.envelope import utcnow
from controlplane.domain.runs.approvals import (
    Approval,
    ApprovalState,
    parse_decision,
)
from controlplane.domain.runs.lifecycle import RunPhase, RunReason, is_terminal
from controlplane.domain.runs.model import TIMEOUT_MAX_S, RunRecord
from controlplane.domain.runs.steps import CALL_ID_PATTERN
from controlplane.service.run_execution import AgentIdentity, _live, _own_run
from controlplane.service.runs import resource_of
from controlplane.service.runs import transition as move_run


class ApprovalRequest(Strict):
    """The body of the gateway's `POST /runs/{run}/approvals`: the step it gates
    (`callId`), the action and its details (a tool's arguments), how long to wait."""

    callId: str = Field(pattern=CALL_ID_PATTERN)
    action: str = Field(min_length=1, max_length=200)
    details: dict[str, JsonValue] = Field(default_factory=dict)
    timeoutSeconds: int | None = Field(default=None, ge=1, le=TIMEOUT_MAX_S)
    attempt: int | None = Field(default=None, ge=1)


def parse_request(body: Any) -> ApprovalRequest:
    """Validate an approval request. Raises ValidationFailed naming each field, BadRequest
    for text no database can store."""
    refuse_unstorable(body)
    try:
        return ApprovalRequest.model_validate(body)
    except ValidationError as exc:
        errors = field_errors(exc)
        detail = "; ".join(f"{fe.pointer}: {fe.message}" for fe in errors)
        raise ValidationFailed(f"invalid approval request: {detail}", errors=errors) from None


def _expiry(record: RunRecord, now: datetime, timeout_s: int | None) -> datetime:
    """When a new approval expires: `timeout_s` from now, never after the run's deadline
    (waiting does not extend a run's timeoutSeconds)."""
    if timeout_s is None:
        return record.deadline
    return min(now + timedelta(seconds=timeout_s), record.deadline)


async def request(uow: UnitOfWork, who: AgentIdentity, name: str, body: Any) -> Approval:
    """The agent of run `name` asks for approval of step `callId`: a pending approval, and
    the run `Running → InputRequired`. Idempotent by (run, callId): asking again (a new
    attempt, a retried request) answers the approval already there, decided or not, and
    writes nothing. Raises ValidationFailed, RunNotFound, RunFinished. Commits."""
    asked = parse_request(body)
    record = _live(await _own_run(uow, who, name, asked.attempt))
    existing = await uow.approvals.by_call(record.id, asked.callId)
    if existing is not None:
        if existing.state is ApprovalState.PENDING and record.phase is RunPhase.RUNNING:
            await _wait_for(uow, record, existing)
            await uow.commit()
        return existing
    now = utcnow()
    approval = Approval(
        id=str(uuid.uuid4()),
        run_id=record.id,
        action=asked.action,
        details=dict(asked.details),
        state=ApprovalState.PENDING,
        requested_at=now,
        expires_at=_expiry(record, now, asked.timeoutSeconds),
        tenant=record.tenant,
        run_name=record.name,
        call_id=asked.callId,
    )
    await uow.approvals.add(approval)
    if record.phase is RunPhase.RUNNING:
        await _wait_for(uow, record, approval)
    await uow.commit()
    return approval


async def _wait_for(uow: UnitOfWork, record: RunRecord, approval: Approval) -> None:
    await move_run(
        uow,
        record,
        RunPhase.INPUT_REQUIRED,
        RunReason.APPROVAL_REQUESTED,
        f"waiting for approval {approval.id} of {approval.action}",
        audit_action="run.approval_requested",
    )


async def of_agent_run(
    uow: UnitOfWork, who: AgentIdentity, name: str, approval_id: str
) -> Approval:
    """Approval `approval_id` of `who`'s run `name` as it is now. Raises RunNotFound,
    ApprovalNotFound."""
    record = await uow.runs.find(who.tenant, name)  # read only: a poll takes no lock
    if record is None or record.agent_id != who.agent_id:
        raise RunNotFound(f"run {name!r} not found for agent {who.agent!r}")
    approval = await uow.approvals.by_id(approval_id)
    if approval is None or approval.run_id != record.id:
        raise ApprovalNotFound(f"approval {approval_id!r} not found for run {name!r}")
    return approval


async def list_approvals(
    uow: UnitOfWork, tenant: str, *, state: str | None = None, run: str | None = None
) -> list[Approval]:
    """The approvals of `tenant` (of run `run` when given; in `state` when given), oldest
    first. Raises BadRequest for an unknown state, RunNotFound."""
    wanted = _state(state)
    if run is not None:
        record = await uow.runs.get(tenant, run)
        found = await uow.approvals.of_run(record.id)
        return [a for a in found if wanted is None or a.state is wanted]
    return await uow.approvals.of_tenant(tenant, wanted)


def _state(state: str | None) -> ApprovalState | None:
    if not state:
        return None
    try:
        return ApprovalState(state)
    except ValueError:
        known = ", ".join(s.value for s in ApprovalState)
        raise BadRequest(
            f"state: {state!r} is not an approval state (one of {known})",
            errors=[FieldError("state", f"one of {known}")],
        ) from None


@dataclass(frozen=True)
class Decided:
    """A decision as stored, and the run after it."""

    approval: Approval
    run: RunRecord


async def decide(uow: UnitOfWork, tenant: str, run: str, approval_id: str, body: Any) -> Decided:
    """A human (`uow.principal`) approves or rejects approval `approval_id` of run `run`
    (`{"decision": "approve"|"reject", "edits"?, "comment"?}`); one too late expires it
    instead. The decision is audited with its principal; the run goes back to `Running`
    when no other approval of it is pending. Raises ValidationFailed, RunNotFound,
    ApprovalNotFound, ApprovalDecided (409: decided already), RunFinished. Commits."""
    decision = parse_decision(body)
    found = await uow.runs.get(tenant, run)
    record = await uow.runs.by_id(found.id, for_update=True) or found
    approval = await uow.approvals.by_id(approval_id, for_update=True)
    if approval is None or approval.run_id != record.id:
        raise ApprovalNotFound(f"approval {approval_id!r} not found for run {run!r}")
    if is_terminal(record.phase) and approval.state is ApprovalState.PENDING:
        raise RunFinished(f"run {run!r} already ended ({record.phase})")
    decided = approval.decide(decision, by=uow.principal, at=utcnow())
    await _settle(uow, record, decided, f"approval.{decision.decision}")
    await uow.commit()
    return Decided(decided, record)


async def _settle(uow: UnitOfWork, record: RunRecord, decided: Approval, action: str) -> None:
    """Store a decided approval, audit it, and resume the run when nothing else waits."""
    await uow.approvals.save(decided)
    await uow.audit.record(
        action,
        f"{resource_of(record)}/approvals/{decided.id}",
        tenant=record.tenant,
        details={
            "run": record.name,
            "approval": decided.id,
            "action": decided.action,
            "state": str(decided.state),
            "edits": decided.edits,
            "comment": decided.comment,
        },
    )
    if record.phase is RunPhase.INPUT_REQUIRED and not await uow.approvals.pending_of_run(
        record.id
    ):
        await move_run(
            uow,
            record,
            RunPhase.RUNNING,
            RunReason.APPROVAL_DECIDED,
            f"approval {decided.id} {decided.state} by {decided.decided_by}",
        )


async def expire(uow: UnitOfWork, approval_id: str) -> Approval | None:
    """Expire approval `approval_id` if it is still pending and due, or its run has ended
    (a rejection; decidedBy `system:expiry`). Returns it, or None when there was nothing to
    do. Commits."""
    approval = await uow.approvals.by_id(approval_id, for_update=True)
    if approval is None or approval.state is not ApprovalState.PENDING:
        return None
    record = await uow.runs.by_id(approval.run_id, for_update=True)
    now = utcnow()
    if record is None or not (approval.is_due(now) or is_terminal(record.phase)):
        return None
    expired = approval.expire(now)
    await _settle(uow, record, expired, "approval.expire")
    await uow.commit()
    return expired
