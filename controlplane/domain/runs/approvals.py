"""Approvals: a run asks a human before an action, and waits in `InputRequired`.

    pending → approved | rejected | expired;  a decided approval never changes

An approval that expires counts as a rejection for the run (`is_granted`). Pure: the service
layer stores approvals, audits each decision with its principal, and moves the run
(architecture/state-machines.md, "Approvals").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, JsonValue, ValidationError

from controlplane.domain.agents.model import Strict, field_errors, refuse_unstorable
from controlplane.domain.errors import ApprovalDecided, ValidationFailed
from controlplane.domain.events.envelope import rfc3339

# The principal recorded on an approval that expired rather than being decided by someone.
EXPIRY = "system:expiry"


class ApprovalState(StrEnum):
    """Where an approval is; every state but `pending` is final."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


TRANSITIONS: dict[ApprovalState, frozenset[ApprovalState]] = {
    ApprovalState.PENDING: frozenset(
        {ApprovalState.APPROVED, ApprovalState.REJECTED, ApprovalState.EXPIRED}
    ),
    ApprovalState.APPROVED: frozenset(),
    ApprovalState.REJECTED: frozenset(),
    ApprovalState.EXPIRED: frozenset(),
}


def check_transition(current: ApprovalState, target: ApprovalState) -> None:
    """Raise ApprovalDecided (code APPROVAL_DECIDED, HTTP 409) unless `current → target` is in
    TRANSITIONS: once approved, rejected or expired, an approval cannot be decided again."""
    if target not in TRANSITIONS[current]:
        raise ApprovalDecided(f"the approval is already {current}; it cannot become {target}")


class ApprovalDecision(Strict):
    """The body of `POST .../runs/{run}/approvals/{approval}`: the decision, `edits` to the
    action's details the agent goes on with, and a comment for the audit log."""

    decision: Literal["approve", "reject"]
    edits: dict[str, JsonValue] | None = None
    comment: str = Field(default="", max_length=10_000)


def parse_decision(body: Any) -> ApprovalDecision:
    """Validate a decision body. Raises ValidationFailed naming each field by JSON pointer
    (`/decision`, ...), BadRequest for text no database can store."""
    refuse_unstorable(body)
    try:
        return ApprovalDecision.model_validate(body)
    except ValidationError as exc:
        errors = field_errors(exc)
        detail = "; ".join(f"{fe.pointer}: {fe.message}" for fe in errors)
        raise ValidationFailed(f"invalid decision: {detail}", errors=errors) from None


@dataclass(frozen=True)
class Approval:
    """One request for a human's decision: `action` names what the agent wants to do (a tool,
    say), `details` its arguments; `expires_at` None waits for ever. `decided_by` is the
    principal that decided (`system:expiry` for an expiry). `call_id` is the step the
    approval gates (the callId of the tool step, or of the request itself); `run_name` and
    `tenant` name the run as the API does."""

    id: str
    run_id: str
    action: str
    details: dict[str, Any]
    state: ApprovalState
    requested_at: datetime
    expires_at: datetime | None = None
    decided_at: datetime | None = None
    decided_by: str | None = None
    edits: dict[str, Any] | None = None
    comment: str = ""
    tenant: str = ""
    run_name: str = ""
    call_id: str = ""

    @property
    def arguments(self) -> dict[str, Any]:
        """What the agent goes on with: `details` with the decider's `edits` laid over them
        (a key in `edits` replaces the same key of `details`)."""
        return {**self.details, **(self.edits or {})}

    def decide(self, decision: ApprovalDecision, *, by: str, at: datetime) -> Approval:
        """This approval approved or rejected by principal `by` at `at`. An approval whose
        `expires_at` has passed expires instead (the decision came too late). Raises
        ApprovalDecided when it is already decided."""
        if self.is_due(at):
            return self.expire(at)
        target = (
            ApprovalState.APPROVED if decision.decision == "approve" else ApprovalState.REJECTED
        )
        check_transition(self.state, target)
        return replace(
            self,
            state=target,
            decided_at=at,
            decided_by=by,
            edits=decision.edits,
            comment=decision.comment,
        )

    def expire(self, at: datetime) -> Approval:
        """This approval expired at `at`. Raises ApprovalDecided when it is already decided."""
        check_transition(self.state, ApprovalState.EXPIRED)
        return replace(self, state=ApprovalState.EXPIRED, decided_at=at, decided_by=EXPIRY)

    def is_due(self, now: datetime) -> bool:
        """Whether a pending approval has passed its `expires_at`."""
        return (
            self.state is ApprovalState.PENDING
            and self.expires_at is not None
            and now >= self.expires_at
        )

    @property
    def is_granted(self) -> bool:
        """Whether the run may go on with the action: approved only (expired is a rejection)."""
        return self.state is ApprovalState.APPROVED

    def to_object(self) -> dict[str, Any]:
        """The approval as the API shows it; times RFC 3339 UTC."""
        return {
            "id": self.id,
            "run": self.run_name or self.run_id,
            "step": self.call_id,
            "action": self.action,
            "details": self.details,
            "state": str(self.state),
            "requestedAt": rfc3339(self.requested_at),
            "expiresAt": rfc3339(self.expires_at) if self.expires_at else None,
            "decidedAt": rfc3339(self.decided_at) if self.decided_at else None,
            "decidedBy": self.decided_by,
            "edits": self.edits,
            "comment": self.comment,
            "arguments": self.arguments,
        }


ApprovalPolicy = Literal["none", "destructive", "all"]


def needs_approval(policy: str, step_type: str, destructive: bool) -> bool:
    """Whether a step must carry an approved approval under the agent's
    `spec.runs.approval`: `all` gates every tool step, `destructive` the tool steps
    declared destructive (MCP's `destructiveHint`), `none` nothing. Other step types
    (`llm`, `custom`) are never gated by the policy; they may still ask
    (`run.request_approval`)."""
    if step_type != "tool" or policy == "none":
        return False
    return policy == "all" or destructive
