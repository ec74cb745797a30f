"""The control plane's side of `spec.runs.approval` (architecture/approvals.md): a tool step
the policy gates is recorded only with the id of an approved approval for that very step —
same run, same callId, same tool, and the arguments the human approved (their edits laid
over the agent's details). The SDK asks first; this refuses an agent that did not.
"""

from __future__ import annotations

from typing import Any

from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.errors import ApprovalRequired, BadRequest
from controlplane.domain.runs.approvals import needs_approval
from controlplane.domain.runs.model import RunRecord
from controlplane.domain.runs.steps import Step

# The step's own fields about its gate; not part of the journaled Step.
GATE_FIELDS = ("approvalId", "destructive")


def split_gate(body: Any) -> tuple[Any, str | None, bool]:
    """`(step body, approvalId, destructive)` of a step report: the gate fields taken out
    of the body. Raises BadRequest when they are of the wrong type."""
    if not isinstance(body, dict):
        return body, None, False
    rest = {k: v for k, v in body.items() if k not in GATE_FIELDS}
    approval_id = body.get("approvalId")
    destructive = body.get("destructive", False)
    if approval_id is not None and not isinstance(approval_id, str):
        raise BadRequest("approvalId: a string (the id of an approval)")
    if not isinstance(destructive, bool):
        raise BadRequest("destructive: true or false")
    return rest, approval_id, destructive


async def check_step(
    uow: UnitOfWork,
    policy: str,
    record: RunRecord,
    step: Step,
    approval_id: str | None,
    destructive: bool,
) -> None:
    """Raise ApprovalRequired (409) when `policy` gates `step` (`needs_approval`) and
    `approval_id` does not name an approved approval of `record` for this callId, this tool
    and these arguments. A step the policy does not gate passes."""
    if not needs_approval(policy, step.type, destructive):
        return
    where = f"tool step {step.name!r} (callId {step.callId})"
    if approval_id is None:
        raise ApprovalRequired(f"{where} needs an approved approval (spec.runs.approval={policy})")
    approval = await uow.approvals.by_id(approval_id)
    if approval is None or approval.run_id != record.id or approval.call_id != step.callId:
        raise ApprovalRequired(f"{where}: approval {approval_id!r} is not this step's")
    if not approval.is_granted:
        raise ApprovalRequired(f"{where}: approval {approval_id!r} is {approval.state}")
    if approval.action != step.name or step.input != approval.arguments:
        raise ApprovalRequired(
            f"{where}: the call differs from the one approved "
            f"({approval.action!r} with {approval.arguments!r})"
        )
