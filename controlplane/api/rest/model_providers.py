"""`/api/v1/tenants/{tenant}/models`: the tenant's model providers, and
`/api/v1/tenants/{tenant}/usage`: what its model calls used (architecture/model-gateway.md).

Viewers read, editors write (`tenant_access`). A provider's `credentialRef` is a reference
(`{"env": NAME}` or `{"file": PATH}`); no answer ever holds a secret.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Request
from fastapi.responses import JSONResponse

from controlplane.api.errors import responses
from controlplane.api.rest.agents import if_match
from controlplane.api.security import Caller, TenantName, tenant_access
from controlplane.domain.access import Role
from controlplane.domain.agents.model import DNS1123_LABEL
from controlplane.domain.errors import FieldError, ValidationFailed
from controlplane.domain.providers.model import parse_provider
from controlplane.service import model_providers as svc

router = APIRouter(
    prefix="/api/v1/tenants/{tenant}",
    tags=["models"],
    dependencies=[Depends(tenant_access(read=Role.VIEWER, write=Role.EDITOR))],
)
ProviderName = Annotated[
    str, Path(min_length=1, max_length=63, pattern=DNS1123_LABEL, description="Provider name.")
]
_SPEC = {"$ref": "#/components/schemas/ProviderSpec"}
_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": _SPEC}}}}
_NAMED = {"allOf": [_SPEC, {"required": ["name"], "properties": {"name": {"type": "string"}}}]}
_NAMED_BODY = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": _NAMED}}}
}


def _etag(body: dict[str, Any]) -> dict[str, str]:
    return {"ETag": f'"{body["metadata"]["resourceVersion"]}"'}


async def _apply(
    request: Request, principal: Caller, tenant: str, name: str, body: Any, expected: str | None
) -> JSONResponse:
    spec = parse_provider(body, name)
    async with request.app.state.container.uow(principal.audit_name) as uow:
        applied = await svc.apply_provider(uow, tenant, spec, expected_version=expected)
    view = applied.record.to_object()
    return JSONResponse(view, status_code=201 if applied.created else 200, headers=_etag(view))


@router.post(
    "/models",
    response_model=None,
    openapi_extra=_NAMED_BODY,
    responses={
        200: {"description": "Already there (replaced if it differed)"},
        201: {"description": "Created"},
        **responses("VALIDATION_FAILED", "PERMISSION_DENIED", "TENANT_NOT_FOUND"),
    },
)
async def create_provider(
    tenant: TenantName, request: Request, principal: Caller, body: Annotated[dict[str, Any], Body()]
) -> Any:
    """Create a provider named by the body's `name` (a second POST of it applies the body
    again: idempotent, as `apply`)."""
    name = body.get("name") if isinstance(body, dict) else None
    if not isinstance(name, str):
        raise ValidationFailed(
            "invalid model provider: /name: required (a DNS-1123 label)",
            errors=[FieldError("/name", "required (a DNS-1123 label)")],
        )
    return await _apply(request, principal, tenant, name, body, None)


@router.put(
    "/models/{name}",
    response_model=None,
    openapi_extra=_BODY,
    responses={
        200: {"description": "Replaced (or unchanged)"},
        201: {"description": "Created"},
        **responses("VALIDATION_FAILED", "PERMISSION_DENIED", "TENANT_NOT_FOUND", "CONFLICT"),
    },
)
async def put_provider(
    tenant: TenantName,
    name: ProviderName,
    request: Request,
    principal: Caller,
    body: Annotated[dict[str, Any], Body()],
    if_match_header: Annotated[str | None, Header(alias="If-Match")] = None,
) -> Any:
    """Create provider `name` or replace it: `baseUrl`, `credentialRef`, `models`, `pricing`
    (USD per million tokens), `limits`. `If-Match` makes it conditional (409 when stale)."""
    return await _apply(request, principal, tenant, name, body, if_match(if_match_header))


@router.get(
    "/models",
    response_model=None,
    responses={200: {"description": "ModelProviderList"}, **responses("TENANT_NOT_FOUND")},
)
async def list_providers(tenant: TenantName, request: Request) -> Any:
    """The tenant's providers by name (their credentials by reference only)."""
    async with request.app.state.container.uow() as uow:
        await uow.tenants.get(tenant)
        records = await uow.models.list(tenant)
    return {
        "apiVersion": "agentos.io/v1alpha1",
        "kind": "ModelProviderList",
        "items": [r.to_object() for r in records],
    }


@router.get(
    "/models/{name}",
    response_model=None,
    responses={200: {"description": "ModelProvider"}, **responses("MODEL_NOT_FOUND")},
)
async def get_provider(tenant: TenantName, name: ProviderName, request: Request) -> Any:
    """One provider. 404 MODEL_NOT_FOUND."""
    async with request.app.state.container.uow() as uow:
        record = await uow.models.get(tenant, name)
    view = record.to_object()
    return JSONResponse(view, headers=_etag(view))


@router.delete(
    "/models/{name}",
    status_code=204,
    responses=responses("MODEL_NOT_FOUND", "PERMISSION_DENIED"),
)
async def delete_provider(
    tenant: TenantName, name: ProviderName, request: Request, principal: Caller
) -> None:
    """Delete a provider; calls to its models fail from then on (404 MODEL_NOT_FOUND)."""
    async with request.app.state.container.uow(principal.audit_name) as uow:
        await svc.delete_provider(uow, tenant, name)


@router.get(
    "/usage",
    response_model=None,
    responses={200: {"description": "ModelUsage"}, **responses("TENANT_NOT_FOUND")},
)
async def tenant_usage(tenant: TenantName, request: Request) -> Any:
    """The tenant's model usage: per provider and budget window (newest first), and the
    totals over them. Tokens are counts; `costUsd` a decimal string."""
    async with request.app.state.container.uow() as uow:
        windows = await svc.tenant_usage(uow, tenant)
    totals = {"requests": 0, "inputTokens": 0, "outputTokens": 0, "cachedInputTokens": 0}
    cost = sum((w.cost_usd for w in windows), start=Decimal(0))
    items: list[dict[str, Any]] = []
    for w in windows:
        item: dict[str, Any] = {
            "provider": w.provider,
            "windowStart": w.window_start,
            "requests": w.requests,
            "inputTokens": w.input_tokens,
            "outputTokens": w.output_tokens,
            "cachedInputTokens": w.cached_input_tokens,
            "costUsd": str(w.cost_usd.normalize()),
        }
        items.append(item)
        for key in totals:
            totals[key] += int(item[key])
    return {"tenant": tenant, "total": {**totals, "costUsd": str(cost.normalize())}, "items": items}
