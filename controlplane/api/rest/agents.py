"""`/api/v1/tenants/{tenant}/agents`: create, apply, read, list, watch, delete, events.

Every route here is behind `tenant_access` (viewer reads, editor writes): see security.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from controlplane.api.errors import responses
from controlplane.api.rest.models import AgentEventList, AgentList, AgentObject, WatchEventOut
from controlplane.api.security import Caller, TenantName, tenant_access
from controlplane.data.outbox.change_feed import OutboxFeed
from controlplane.data.repositories.agents import AgentRepository
from controlplane.domain.access import Principal, Role
from controlplane.domain.agents.model import DNS1123_LABEL
from controlplane.domain.errors import BadRequest, FieldError
from controlplane.domain.events.envelope import rfc3339
from controlplane.domain.selectors import parse_selector
from controlplane.service import agents as svc
from controlplane.service import listing
from controlplane.service.idempotency import IdempotencyRequest, request_hash

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from controlplane.bootstrap import Container
    from controlplane.data.unit_of_work import UnitOfWork

router = APIRouter(
    prefix="/api/v1/tenants/{tenant}",
    tags=["agents"],
    dependencies=[Depends(tenant_access(read=Role.VIEWER, write=Role.EDITOR))],
)

AgentName = Annotated[
    str, Path(min_length=1, max_length=63, pattern=DNS1123_LABEL, description="Agent name.")
]
WATCH_MEDIA_TYPE = "application/x-ndjson"
_AGENT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Agent"}}},
    }
}
# A Structured Field string (RFC 8941) as the draft says, or the bare key many clients send.
IDEMPOTENCY_KEY_PATTERN = r'^"?[\x21\x23-\x7e]{1,255}"?$'


def _container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


def _uow(request: Request, principal: Principal | None = None) -> UnitOfWork:
    return _container(request).uow(principal.audit_name if principal else "system")


def _reads(request: Request) -> AsyncEngine:
    """The engine of reads that need no transaction: autocommit, so one statement is one
    round trip (no BEGIN, no ROLLBACK)."""
    reads: AsyncEngine = request.app.state.api.reads
    return reads


def _feed(request: Request) -> OutboxFeed:
    feed: OutboxFeed = request.app.state.feed
    return feed


def _etag(body: dict[str, Any]) -> dict[str, str]:
    return {"ETag": f'"{body["metadata"]["resourceVersion"]}"'}


def if_match(value: str | None) -> str | None:
    """The resourceVersion of an If-Match header (`"3"`, `3` or `W/"3"`); None for absent or
    `*` (RFC 9110 §13.1.1)."""
    if value is None:
        return None
    value = value.strip()
    if value in ("", "*"):
        return None
    return value.removeprefix("W/").strip('"')


@router.get(
    "/agents",
    response_model=None,
    responses={
        200: {
            "model": AgentList,
            "description": "An AgentList; with `watch=true`, a stream of watch events, one "
            "JSON object per line.",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/AgentList"}},
                WATCH_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/WatchEventOut"}},
            },
        },
        **responses("TENANT_NOT_FOUND", "BAD_REQUEST", "PERMISSION_DENIED"),
    },
)
async def list_agents(
    tenant: TenantName,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=listing.MAX_LIMIT)] = listing.DEFAULT_LIMIT,
    continue_: Annotated[
        str | None, Query(alias="continue", max_length=1000, description="From the last page.")
    ] = None,
    label_selector: Annotated[
        str | None,
        Query(alias="labelSelector", max_length=2000, description="e.g. `team=a,tier in (x,y)`"),
    ] = None,
    watch: Annotated[bool, Query(description="Stream changes instead of a list.")] = False,
    resource_version: Annotated[
        str | None,
        Query(
            alias="resourceVersion",
            max_length=32,
            description="With watch: the position to resume after (from a list or an event).",
        ),
    ] = None,
    timeout_seconds: Annotated[
        int | None, Query(alias="timeoutSeconds", ge=1, description="Watch: end after this.")
    ] = None,
) -> Any:
    """Agents of `tenant`, by name, a page at a time (`limit`, `continue`), filtered by
    `labelSelector`; or, with `watch=true`, their changes as newline-delimited JSON watch
    events (Kubernetes API conventions)."""
    requirements = parse_selector(label_selector)
    container = _container(request)
    if watch:
        since = listing.parse_resource_version(resource_version)
        max_s = container.settings.watch_max_timeout_s
        events = listing.watch_agents(
            lambda: _uow(request),
            _feed(request),
            tenant,
            since=since,
            requirements=requirements,
            timeout_s=min(timeout_seconds or max_s, max_s),
            poll_interval_s=container.settings.watch_poll_interval_s,
        )

        async def lines() -> AsyncIterator[bytes]:
            async for event in events:
                yield json.dumps(event.to_dict()).encode() + b"\n"

        return StreamingResponse(lines(), media_type=WATCH_MEDIA_TYPE)
    page = await listing.list_agents(
        lambda: _uow(request),
        _feed(request),
        tenant,
        limit=limit,
        continue_token=continue_,
        requirements=requirements,
    )
    metadata: dict[str, Any] = {"resourceVersion": str(page.resource_version)}
    if page.continue_token:
        metadata["continue"] = page.continue_token
    return {
        "apiVersion": "agentos.io/v1alpha1",
        "kind": "AgentList",
        "metadata": metadata,
        "items": [a.to_manifest() for a in page.items],
    }


@router.post(
    "/agents",
    status_code=201,
    response_model=None,
    openapi_extra=_AGENT_BODY,
    responses={
        201: {
            "model": AgentObject,
            "description": "Created; or, with `Idempotent-Replayed: true`, the first "
            "response to this Idempotency-Key.",
            "headers": {"Idempotent-Replayed": {"schema": {"type": "string"}}},
        },
        **responses(
            "TENANT_NOT_FOUND",
            "PERMISSION_DENIED",
            "ALREADY_EXISTS",
            "IDEMPOTENCY_KEY_IN_USE",
            "IDEMPOTENCY_KEY_REUSED",
            "BAD_REQUEST",
        ),
    },
)
async def create_agent(
    tenant: TenantName,
    request: Request,
    principal: Caller,
    manifest: Annotated[dict[str, Any], Body()],
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            pattern=IDEMPOTENCY_KEY_PATTERN,
            description="Makes the create safe to retry (IETF httpapi Idempotency-Key draft):"
            " same key and body replay the first response; another body is 422; a request "
            "still in flight is 409. Scoped per tenant and principal, kept 24 h.",
        ),
    ] = None,
) -> Any:
    """Create an agent. 409 ALREADY_EXISTS if the name is taken."""
    container = _container(request)
    idempotency = None
    if idempotency_key is not None:
        idempotency = IdempotencyRequest(
            tenant=tenant,
            principal=principal.name,
            key=idempotency_key.strip('"'),
            request_hash=request_hash(f"POST /api/v1/tenants/{tenant}/agents", manifest),
            retention_s=container.settings.idempotency_retention_s,
        )
    async with _uow(request, principal) as uow:
        result = await svc.create_agent(uow, tenant, manifest, idempotency=idempotency)
    headers = _etag(result.body)
    if result.replayed:
        headers["Idempotent-Replayed"] = "true"
    elif result.agent_id is not None:
        container.notify(result.agent_id)
    return JSONResponse(result.body, status_code=201, headers=headers)


@router.put(
    "/agents/{name}",
    response_model=None,
    openapi_extra=_AGENT_BODY,
    responses={
        200: {"description": "Updated (or unchanged)", "model": AgentObject},
        201: {"description": "Created", "model": AgentObject},
        **responses("TENANT_NOT_FOUND", "PERMISSION_DENIED", "CONFLICT"),
    },
)
async def apply_agent(
    tenant: TenantName,
    name: AgentName,
    request: Request,
    principal: Caller,
    manifest: Annotated[dict[str, Any], Body()],
    if_match_header: Annotated[
        str | None,
        Header(alias="If-Match", description="resourceVersion the write expects (else 409)."),
    ] = None,
) -> Any:
    """Create or update (`kubectl apply` semantics); 201 when created, 200 otherwise.
    A `metadata.resourceVersion` in the body or an `If-Match` header makes the write
    conditional (409 CONFLICT when stale)."""
    container = _container(request)
    metadata = manifest.get("metadata")
    expected = if_match(if_match_header)
    if isinstance(metadata, dict) and "name" in metadata:
        body_version = metadata.pop("resourceVersion", None)
        expected = expected or (str(body_version) if body_version is not None else None)
        if metadata.get("name") != name:
            # As Kubernetes answers it: 400, the body contradicts the URL.
            raise BadRequest(
                f"metadata.name {metadata.get('name')!r} does not match the name in the path "
                f"{name!r}",
                errors=[FieldError("/metadata/name", f"must be {name!r}")],
            )
    async with _uow(request, principal) as uow:
        result = await svc.apply_agent(uow, tenant, manifest, expected_resource_version=expected)
    container.notify(result.agent.id)
    body = result.agent.to_manifest()
    return JSONResponse(body, status_code=201 if result.created else 200, headers=_etag(body))


@router.get(
    "/agents/{name}",
    response_model=None,
    responses={
        200: {"description": "The agent", "model": AgentObject},
        **responses("TENANT_NOT_FOUND", "AGENT_NOT_FOUND"),
    },
)
async def get_agent(tenant: TenantName, name: AgentName, request: Request) -> Any:
    """One agent, with status and its transition history under `status.history`."""
    async with _reads(request).connect() as conn:
        record, history = await AgentRepository(conn).get_with_history(tenant, name)
    body: dict[str, Any] = record.to_manifest()
    body["status"]["history"] = [
        {
            "from": h["from_phase"],
            "to": h["to_phase"],
            "reason": h["reason"],
            "message": h["message"],
            "at": rfc3339(h["occurred_at"]),
        }
        for h in history
    ]
    return JSONResponse(body, headers=_etag(body))


@router.delete(
    "/agents/{name}",
    status_code=202,
    response_model=None,
    responses={
        202: {"description": "Terminating", "model": AgentObject},
        **responses("TENANT_NOT_FOUND", "AGENT_NOT_FOUND", "PERMISSION_DENIED", "CONFLICT"),
    },
)
async def delete_agent(
    tenant: TenantName,
    name: AgentName,
    request: Request,
    principal: Caller,
    if_match_header: Annotated[str | None, Header(alias="If-Match")] = None,
) -> Any:
    """Request deletion: the agent goes Terminating, then disappears once its sandbox is
    removed (202 Accepted). `If-Match` makes it conditional (409 CONFLICT when stale)."""
    container = _container(request)
    async with _uow(request, principal) as uow:
        record = await svc.delete_agent(
            uow, tenant, name, expected_resource_version=if_match(if_match_header)
        )
    container.notify(record.id)
    return JSONResponse(record.to_manifest(), status_code=202)


@router.get(
    "/agents/{name}/events",
    response_model=None,
    responses={
        200: {"description": "Events, by sequence", "model": AgentEventList},
        **responses("TENANT_NOT_FOUND", "AGENT_NOT_FOUND"),
    },
)
async def agent_events(tenant: TenantName, name: AgentName, request: Request) -> Any:
    """The agent's events from the outbox, in sequence order, with their delivery state."""
    async with _uow(request) as uow:
        events = await svc.agent_events(uow, tenant, name)
    return {
        "items": [
            {
                "event_id": e.event_id,
                "event_type": e.event_type,
                "sequence": e.sequence,
                "occurred_at": rfc3339(e.occurred_at),
                "state": e.state,
                "payload": e.payload,
            }
            for e in events
        ]
    }


__all__ = ["WatchEventOut", "router"]
