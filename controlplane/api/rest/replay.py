"""`POST /api/v1/tenants/{tenant}/runs/{run}/replay`: a new run replaying another
(architecture/replay.md). Editors only, as any run creation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Request
from fastapi.responses import JSONResponse

from controlplane.api.errors import responses
from controlplane.api.security import TenantName, audit_name, tenant_access
from controlplane.domain.access import Role
from controlplane.service import replay as svc

if TYPE_CHECKING:
    from controlplane.bootstrap import Container

router = APIRouter(
    prefix="/api/v1/tenants/{tenant}",
    tags=["runs"],
    dependencies=[Depends(tenant_access(read=Role.VIEWER, write=Role.EDITOR))],
)
RunName = Annotated[str, Path(min_length=1, max_length=253, description="Run name.")]


@router.post(
    "/runs/{run}/replay",
    status_code=201,
    response_model=None,
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ReplayRequest"}}
            },
        }
    },
    responses=responses(
        "TENANT_NOT_FOUND", "RUN_NOT_FOUND", "AGENT_NOT_FOUND", "PERMISSION_DENIED", "AGENT_BUSY"
    ),
)
async def replay_run(
    tenant: TenantName,
    run: RunName,
    request: Request,
    body: Annotated[dict[str, Any] | None, Body()] = None,
) -> Any:
    """Replay a run (`{"mode": "recorded"|"live", "fromStep": N?}`): 201 and the new Run,
    `status.replayOf` naming its origin."""
    container: Container = request.app.state.container
    async with container.uow(audit_name(request)) as uow:
        made = await svc.replay_run(uow, tenant, run, body)
    return JSONResponse(made.body, status_code=201)
