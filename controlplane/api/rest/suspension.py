"""`/api/v1/tenants/{tenant}/agents/{name}/suspend` and `/resume` (adr/0019-suspend-resume.md).

Both answer 202 Accepted with the agent: the controller does the work (service/suspension.py
says what each moves). Behind `tenant_access` like the other agent routes (editor writes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from controlplane.api.errors import responses
from controlplane.api.rest.agents import AgentName
from controlplane.api.rest.models import AgentObject
from controlplane.api.security import Caller, TenantName, tenant_access
from controlplane.domain.access import Role
from controlplane.service import suspension as svc

if TYPE_CHECKING:
    from controlplane.bootstrap import Container

router = APIRouter(
    prefix="/api/v1/tenants/{tenant}",
    tags=["agents"],
    dependencies=[Depends(tenant_access(read=Role.VIEWER, write=Role.EDITOR))],
)

_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"description": "Accepted; the controller suspends or resumes", "model": AgentObject},
    **responses("TENANT_NOT_FOUND", "AGENT_NOT_FOUND", "PERMISSION_DENIED", "CONFLICT"),
}


@router.post("/agents/{name}/suspend", status_code=202, response_model=None, responses=_RESPONSES)
async def suspend_agent(
    tenant: TenantName, name: AgentName, request: Request, principal: Caller
) -> Any:
    """Suspend a Ready agent (409 CONFLICT in another phase): it is Suspended once its sandbox
    is checkpointed (gVisor: memory and files) or stopped (runc: files only)."""
    container: Container = request.app.state.container
    async with container.uow(principal.audit_name) as uow:
        record = await svc.suspend_agent(uow, tenant, name)
    container.notify(record.id)
    return JSONResponse(record.to_manifest(), status_code=202)


@router.post("/agents/{name}/resume", status_code=202, response_model=None, responses=_RESPONSES)
async def resume_agent(
    tenant: TenantName, name: AgentName, request: Request, principal: Caller
) -> Any:
    """Resume a Suspended agent (Starting, then Ready); a Starting or Ready one is returned as
    it is; 409 CONFLICT in another phase."""
    container: Container = request.app.state.container
    async with container.uow(principal.audit_name) as uow:
        record = await svc.resume_agent(uow, tenant, name)
    container.notify(record.id)
    return JSONResponse(record.to_manifest(), status_code=202)
