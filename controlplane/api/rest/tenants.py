"""`/api/v1/tenants`: tenants and their quota; `/api/v1/tenants/{tenant}/tokens`: API tokens.

Who may: any caller lists the tenants it sees (a platform admin: all); a viewer reads its
tenant; a tenant admin changes its quota and manages its tokens; only a platform admin
creates and deletes tenants.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse

from controlplane.api.context import ApiContext
from controlplane.api.errors import responses
from controlplane.api.rest.agents import if_match
from controlplane.api.rest.models import TenantIn, TenantList, TenantObject, TokenIn, TokenList
from controlplane.api.rest.models import TokenObject as TokenOut
from controlplane.api.security import Caller, TenantName, tenant_access
from controlplane.domain.access import Role
from controlplane.domain.errors import BadRequest, Conflict, FieldError, PermissionDenied
from controlplane.domain.events.envelope import rfc3339
from controlplane.domain.quantity import cpu_millis, memory_bytes
from controlplane.domain.records import TenantRecord
from controlplane.service import listing
from controlplane.service import tokens as token_service
from controlplane.service.tenants import create_tenant, delete_tenant, set_tenant_quota

tenants_router = APIRouter(prefix="/api/v1/tenants", tags=["tenants"])
tenant_router = APIRouter(
    prefix="/api/v1/tenants/{tenant}",
    tags=["tenants"],
    dependencies=[Depends(tenant_access(read=Role.VIEWER, write=Role.ADMIN))],
)
tokens_router = APIRouter(
    prefix="/api/v1/tenants/{tenant}/tokens",
    tags=["tokens"],
    dependencies=[Depends(tenant_access(read=Role.ADMIN, write=Role.ADMIN))],
)


def _limits(quota: dict[str, Any]) -> dict[str, int]:
    limits: dict[str, int] = {}
    if quota.get("agents") is not None:
        limits["agents"] = quota["agents"]
    if quota.get("cpu") is not None:
        limits["cpu_millis"] = cpu_millis(quota["cpu"])
    if quota.get("memory") is not None:
        limits["memory_bytes"] = memory_bytes(quota["memory"])
    return limits


def tenant_view(record: TenantRecord) -> dict[str, Any]:
    """A tenant as the API shows it; its quota in the quantities it is written in."""
    q = record.quota
    quota: dict[str, Any] = {}
    if "agents" in q:
        quota["agents"] = q["agents"]
    if "cpu_millis" in q:
        quota["cpu"] = f"{q['cpu_millis']}m"
    if "memory_bytes" in q:
        quota["memory"] = str(q["memory_bytes"])
    return {
        "apiVersion": "agentos.io/v1alpha1",
        "kind": "Tenant",
        "metadata": {
            "name": record.name,
            "resourceVersion": str(record.resource_version),
            "creationTimestamp": rfc3339(record.created_at),
        },
        "quota": quota,
    }


@tenants_router.get(
    "",
    response_model=None,
    responses={200: {"description": "Tenants", "model": TenantList}, **responses("BAD_REQUEST")},
)
async def list_tenants(
    request: Request,
    principal: Caller,
    limit: Annotated[int, Query(ge=1, le=listing.MAX_LIMIT)] = listing.DEFAULT_LIMIT,
    continue_: Annotated[str | None, Query(alias="continue", max_length=1000)] = None,
) -> Any:
    """The tenants the caller sees, by name: all for a platform admin, else its own."""
    container = request.app.state.container
    after = listing.decode_continue(continue_)
    async with container.uow() as uow:
        if principal.platform_admin:
            records = await uow.tenants.list(after=after, limit=limit + 1)
        else:
            assert principal.tenant is not None
            own = await uow.tenants.find(principal.tenant)
            records = [own] if own is not None and (after is None or own.name > after) else []
    metadata: dict[str, Any] = {"resourceVersion": "0"}
    if len(records) > limit:
        records = records[:limit]
        metadata["continue"] = listing.encode_continue(records[-1].name)
    return {
        "apiVersion": "agentos.io/v1alpha1",
        "kind": "TenantList",
        "metadata": metadata,
        "items": [tenant_view(r) for r in records],
    }


@tenant_router.get(
    "",
    response_model=None,
    responses={
        200: {"description": "The tenant", "model": TenantObject},
        **responses("TENANT_NOT_FOUND"),
    },
)
async def get_tenant(tenant: TenantName, request: Request) -> Any:
    """A tenant and its quota. 404 TENANT_NOT_FOUND."""
    async with request.app.state.container.uow() as uow:
        record = await uow.tenants.get(tenant)
    return tenant_view(record)


@tenant_router.put(
    "",
    response_model=None,
    responses={
        200: {"description": "Quota replaced", "model": TenantObject},
        201: {"description": "Created", "model": TenantObject},
        **responses("PERMISSION_DENIED", "CONFLICT", "TENANT_NOT_FOUND"),
    },
)
async def put_tenant(
    tenant: TenantName,
    body: TenantIn,
    request: Request,
    principal: Caller,
    if_match_header: Annotated[str | None, Header(alias="If-Match")] = None,
) -> Any:
    """Create a tenant (platform admin) or replace its quota (tenant admin): `agents`,
    `cpu`, `memory`; an absent field is no limit. `If-Match` or `metadata.resourceVersion`
    make the write conditional (409 CONFLICT when stale)."""
    container = request.app.state.container
    if body.metadata is not None and body.metadata.name not in (None, tenant):
        raise BadRequest(
            f"metadata.name must be {tenant!r}, the name in the path",
            errors=[FieldError("/metadata/name", f"must be {tenant!r}")],
        )
    expected = if_match(if_match_header) or (
        body.metadata.resourceVersion if body.metadata else None
    )
    limits = _limits(body.quota.model_dump())
    async with container.uow(principal.audit_name) as uow:
        if await uow.tenants.find(tenant) is None:
            if not principal.platform_admin:
                raise PermissionDenied("only a platform admin creates tenants")
            if expected is not None:
                raise Conflict(f"tenant {tenant!r} does not exist at resourceVersion {expected}")
            record = await create_tenant(uow, tenant, limits)
            status = 201
        else:
            version = int(expected) if expected is not None and expected.isdigit() else None
            if expected is not None and version is None:
                raise Conflict(f"tenant {tenant!r} is not at resourceVersion {expected}")
            record = await set_tenant_quota(uow, tenant, limits, expected_resource_version=version)
            status = 200
    container.notify_capacity()
    return JSONResponse(tenant_view(record), status_code=status)


@tenant_router.delete(
    "",
    status_code=204,
    responses=responses("PERMISSION_DENIED", "TENANT_NOT_FOUND", "TENANT_NOT_EMPTY"),
)
async def delete_tenant_route(tenant: TenantName, request: Request, principal: Caller) -> None:
    """Delete a tenant with no agents, and revoke its tokens (platform admin)."""
    if not principal.platform_admin:
        raise PermissionDenied("only a platform admin deletes tenants")
    async with request.app.state.container.uow(principal.audit_name) as uow:
        await delete_tenant(uow, tenant)
    ApiContext.of(request.app.state.container).forget_tenant(tenant)


@tokens_router.get(
    "",
    response_model=None,
    responses={
        200: {"description": "Tokens", "model": TokenList},
        **responses("TENANT_NOT_FOUND", "PERMISSION_DENIED"),
    },
)
async def list_tokens(tenant: TenantName, request: Request) -> Any:
    """The tenant's tokens, revoked ones included; never their secrets."""
    async with request.app.state.container.uow() as uow:
        records = await token_service.list_tokens(uow, tenant)
    return {"items": [token_service.token_view(r) for r in records]}


@tokens_router.post(
    "",
    status_code=201,
    response_model=None,
    responses={
        201: {"description": "The token; `token` is shown only here", "model": TokenOut},
        **responses("TENANT_NOT_FOUND", "PERMISSION_DENIED"),
    },
)
async def create_token(
    tenant: TenantName, body: TokenIn, request: Request, principal: Caller
) -> Any:
    """Issue a token for `principal` with `role` in this tenant (tenant admin)."""
    async with request.app.state.container.uow(principal.audit_name) as uow:
        issued = await token_service.create_token(
            uow,
            body.principal,
            tenant=tenant,
            role=body.role,
            created_by=principal.name,
            ttl_s=body.ttlSeconds,
        )
    return JSONResponse(token_service.token_view(issued.record, issued.token), status_code=201)


@tokens_router.delete(
    "/{token_id}",
    response_model=None,
    responses={
        200: {"description": "The revoked token", "model": TokenOut},
        **responses("TENANT_NOT_FOUND", "TOKEN_NOT_FOUND", "PERMISSION_DENIED"),
    },
)
async def revoke_token(
    tenant: TenantName,
    token_id: Annotated[str, Path(min_length=1, max_length=32)],
    request: Request,
    principal: Caller,
) -> Any:
    """Revoke one of the tenant's tokens; it stops working at once on this server."""
    container = request.app.state.container
    async with container.uow(principal.audit_name) as uow:
        record = await token_service.revoke_token(uow, token_id, tenant=tenant)
    ApiContext.of(container).forget(token_id)
    return token_service.token_view(record)
