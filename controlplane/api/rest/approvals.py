"""`/api/v1/tenants/{tenant}/approvals` and `.../runs/{run}/approvals`: the approvals runs
wait for, and a human's decision (architecture/approvals.md).

Behind `tenant_access`: viewers list, only editors decide (403 PERMISSION_DENIED). Every
decision is audited with the caller's principal; a decided approval answers 409
APPROVAL_DECIDED.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request

from controlplane.api.errors import responses
from controlplane.api.security import TenantName, audit_name, tenant_access
from controlplane.domain.access import Role
from controlplane.service import approvals as svc

if TYPE_CHECKING:
    from controlplane.bootstrap import Container
    from controlplane.data.unit_of_work import UnitOfWork

router = APIRouter(
    prefix="/api/v1/tenants/{tenant}",
    tags=["approvals"],
    dependencies=[Depends(tenant_access(read=Role.VIEWER, write=Role.EDITOR))],
)
RunName = Annotated[str, Path(min_length=1, max_length=253, description="Run name.")]
ApprovalId = Annotated[str, Path(min_length=1, max_length=36, description="Approval id.")]
State = Annotated[
    str | None,
    Query(max_length=16, description="Only approvals in this state (pending, approved, ...)."),
]
_DECISION_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ApprovalDecision"}}
        },
    }
}


def _uow(request: Request, principal: str = "system") -> UnitOfWork:
    container: Container = request.app.state.container
    return container.uow(principal)


@router.get("/approvals", response_model=None, responses=responses("TENANT_NOT_FOUND"))
async def list_approvals(tenant: TenantName, request: Request, state: State = None) -> Any:
    """The tenant's approvals, oldest first (`?state=pending`: those runs wait for)."""
    async with _uow(request) as uow:
        found = await svc.list_approvals(uow, tenant, state=state)
    return {"items": [a.to_object() for a in found]}


@router.get(
    "/runs/{run}/approvals",
    response_model=None,
    responses=responses("TENANT_NOT_FOUND", "RUN_NOT_FOUND"),
)
async def run_approvals(
    tenant: TenantName, run: RunName, request: Request, state: State = None
) -> Any:
    """The approvals of one run, oldest first."""
    async with _uow(request) as uow:
        found = await svc.list_approvals(uow, tenant, state=state, run=run)
    return {"items": [a.to_object() for a in found]}


@router.post(
    "/runs/{run}/approvals/{approval}",
    response_model=None,
    openapi_extra=_DECISION_BODY,
    responses=responses(
        "TENANT_NOT_FOUND",
        "RUN_NOT_FOUND",
        "APPROVAL_NOT_FOUND",
        "PERMISSION_DENIED",
        "APPROVAL_DECIDED",
        "RUN_FINISHED",
    ),
)
async def decide(
    tenant: TenantName,
    run: RunName,
    approval: ApprovalId,
    request: Request,
    body: Annotated[Any, Body()] = None,
) -> Any:
    """Approve or reject (`{"decision": "approve"|"reject", "edits"?: {...}, "comment"?}`):
    the approval as decided; the run goes on (Running) when nothing else is pending."""
    async with _uow(request, audit_name(request)) as uow:
        decided = await svc.decide(uow, tenant, run, approval, body)
    return decided.approval.to_object()
