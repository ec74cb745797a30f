"""`/api/v1/tenants/{tenant}/.../runs`: create, list, read, cancel, steps, and the live event
stream of a run (architecture/runs.md).

Every route is behind `tenant_access` (viewer reads, editor writes): see security.py. A run
is named by the tenant alone (`/runs/{run}`) or under its agent (`/agents/{agent}/runs/{run}`,
404 RUN_NOT_FOUND when the run belongs to another agent).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from controlplane.api.errors import responses
from controlplane.api.rest.agents import IDEMPOTENCY_KEY_PATTERN
from controlplane.api.rest.run_models import RunEventOut, RunList, StepList
from controlplane.api.security import Caller, TenantName, tenant_access
from controlplane.domain.access import Role
from controlplane.domain.agents.model import DNS1123_LABEL
from controlplane.domain.errors import BadRequest
from controlplane.domain.runs.model import Run, RunRecord
from controlplane.service import listing
from controlplane.service import runs as svc
from controlplane.service.idempotency import IdempotencyRequest, request_hash

if TYPE_CHECKING:
    from controlplane.bootstrap import Container
    from controlplane.data.unit_of_work import UnitOfWork

router = APIRouter(
    prefix="/api/v1/tenants/{tenant}",
    tags=["runs"],
    dependencies=[Depends(tenant_access(read=Role.VIEWER, write=Role.EDITOR))],
)

AgentName = Annotated[
    str, Path(min_length=1, max_length=63, pattern=DNS1123_LABEL, description="Agent name.")
]
RunName = Annotated[str, Path(min_length=1, max_length=253, description="Run name.")]
Limit = Annotated[int, Query(ge=1, le=listing.MAX_LIMIT)]
Continue = Annotated[
    str | None, Query(alias="continue", max_length=1000, description="From the last page.")
]
Selector = Annotated[
    str | None,
    Query(alias="labelSelector", max_length=2000, description="e.g. `team=a,tier in (x,y)`"),
]
Phases = Annotated[
    list[str] | None,
    Query(alias="phase", description="Only runs in these phases (repeat, or comma-separate)."),
]
LastEventId = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        max_length=20,
        description="Resume after this sequence (the `id:` of the last event received).",
    ),
]
EVENT_STREAM = "text/event-stream"
KEEPALIVE_S = 15.0
_CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RunCreate"}}},
    }
}
_RUN_ERRORS = responses("TENANT_NOT_FOUND", "RUN_NOT_FOUND")


def _container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


def _uow(request: Request, principal_name: str = "system") -> UnitOfWork:
    return _container(request).uow(principal_name)


def _run(record: RunRecord) -> JSONResponse:
    body = record.to_object()
    return JSONResponse(body, headers={"ETag": f'"{record.resource_version}"'})


@router.post(
    "/agents/{agent}/runs",
    status_code=201,
    response_model=None,
    openapi_extra=_CREATE_BODY,
    responses={
        201: {
            "model": Run,
            "description": "Created, Pending; or, with `Idempotent-Replayed: true`, the first "
            "response to this Idempotency-Key.",
            "headers": {"Idempotent-Replayed": {"schema": {"type": "string"}}},
        },
        **responses(
            "TENANT_NOT_FOUND",
            "AGENT_NOT_FOUND",
            "PERMISSION_DENIED",
            "AGENT_BUSY",
            "IDEMPOTENCY_KEY_IN_USE",
            "IDEMPOTENCY_KEY_REUSED",
        ),
    },
)
async def create_run(
    tenant: TenantName,
    agent: AgentName,
    request: Request,
    principal: Caller,
    body: Annotated[dict[str, Any], Body()],
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            pattern=IDEMPOTENCY_KEY_PATTERN,
            description="Makes the create safe to retry, as for agents: same key and body "
            "replay the first response; another body is 422; one in flight is 409.",
        ),
    ] = None,
) -> Any:
    """Give agent `agent` a run: `{"input": <any JSON>, "timeoutSeconds"?, "labels"?}`.
    201 with the Run in Pending; 409 AGENT_BUSY when admission refuses it (nothing is
    written)."""
    container = _container(request)
    idempotency = None
    if idempotency_key is not None:
        idempotency = IdempotencyRequest(
            tenant=tenant,
            principal=principal.name,
            key=idempotency_key.strip('"'),
            request_hash=request_hash(f"POST /api/v1/tenants/{tenant}/agents/{agent}/runs", body),
            retention_s=container.settings.idempotency_retention_s,
        )
    async with _uow(request, principal.audit_name) as uow:
        result = await svc.create_run(uow, tenant, agent, body, idempotency=idempotency)
    name = result.body["metadata"]["name"]
    headers = {
        "ETag": f'"{result.body["metadata"]["resourceVersion"]}"',
        "Location": f"/api/v1/tenants/{tenant}/agents/{agent}/runs/{name}",
    }
    if result.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(result.body, status_code=201, headers=headers)


async def _list(
    request: Request,
    tenant: str,
    agent: str | None,
    phase: list[str] | None,
    label_selector: str | None,
    limit: int,
    continue_: str | None,
) -> dict[str, Any]:
    async with _uow(request) as uow:
        page = await svc.list_runs(
            uow,
            tenant,
            agent=agent,
            phases=phase or [],
            label_selector=label_selector,
            limit=limit,
            continue_token=continue_,
        )
    metadata = {"continue": page.continue_token} if page.continue_token else {}
    return {
        "apiVersion": "agentos.io/v1alpha1",
        "kind": "RunList",
        "metadata": metadata,
        "items": [r.to_object() for r in page.items],
    }


_LIST: dict[int | str, dict[str, Any]] = {
    200: {"description": "Runs, newest first", "model": RunList}
}


@router.get(
    "/runs",
    response_model=None,
    responses={**_LIST, **responses("TENANT_NOT_FOUND", "BAD_REQUEST")},
)
async def list_tenant_runs(
    tenant: TenantName,
    request: Request,
    agent: Annotated[str | None, Query(max_length=63, description="Only this agent's.")] = None,
    phase: Phases = None,
    label_selector: Selector = None,
    limit: Limit = listing.DEFAULT_LIMIT,
    continue_: Continue = None,
) -> Any:
    """Runs of `tenant`, newest first, a page at a time (`limit`, `continue`), filtered by
    `agent`, `phase` and `labelSelector` (Kubernetes list conventions)."""
    return await _list(request, tenant, agent, phase, label_selector, limit, continue_)


@router.get(
    "/agents/{agent}/runs",
    response_model=None,
    responses={**_LIST, **responses("TENANT_NOT_FOUND", "BAD_REQUEST")},
)
async def list_agent_runs(
    tenant: TenantName,
    agent: AgentName,
    request: Request,
    phase: Phases = None,
    label_selector: Selector = None,
    limit: Limit = listing.DEFAULT_LIMIT,
    continue_: Continue = None,
) -> Any:
    """Runs of one agent, newest first (as `GET .../runs?agent=`)."""
    return await _list(request, tenant, agent, phase, label_selector, limit, continue_)


_GET = {200: {"description": "The run", "model": Run}, **_RUN_ERRORS}


@router.get("/runs/{run}", response_model=None, responses=_GET)
async def get_run(tenant: TenantName, run: RunName, request: Request) -> Any:
    """One run: spec, status (phase, attempt, output or error, usage)."""
    async with _uow(request) as uow:
        return _run(await svc.get_run(uow, tenant, run))


@router.get("/agents/{agent}/runs/{run}", response_model=None, responses=_GET)
async def get_agent_run(
    tenant: TenantName, agent: AgentName, run: RunName, request: Request
) -> Any:
    """One run of the agent."""
    async with _uow(request) as uow:
        return _run(await svc.get_run(uow, tenant, run, agent=agent))


_CANCEL = {
    200: {"description": "Canceled", "model": Run},
    **responses("TENANT_NOT_FOUND", "RUN_NOT_FOUND", "PERMISSION_DENIED", "RUN_FINISHED"),
}


async def _cancel(request: Request, tenant: str, run: str, agent: str | None) -> JSONResponse:
    principal = request.state.principal
    async with _uow(request, principal.audit_name) as uow:
        return _run(await svc.cancel_run(uow, tenant, run, agent=agent))


@router.post("/runs/{run}/cancel", response_model=None, responses=_CANCEL)
async def cancel_run(tenant: TenantName, run: RunName, request: Request) -> Any:
    """Cancel a run that has not ended (Canceled, reason CanceledByUser); 409 RUN_FINISHED
    for one that has."""
    return await _cancel(request, tenant, run, None)


@router.post("/agents/{agent}/runs/{run}/cancel", response_model=None, responses=_CANCEL)
async def cancel_agent_run(
    tenant: TenantName, agent: AgentName, run: RunName, request: Request
) -> Any:
    """Cancel a run of the agent (as `POST .../runs/{run}/cancel`)."""
    return await _cancel(request, tenant, run, agent)


_STEPS = {200: {"description": "The journal", "model": StepList}, **_RUN_ERRORS}


async def _steps(request: Request, tenant: str, run: str, agent: str | None) -> dict[str, Any]:
    async with _uow(request) as uow:
        steps = await svc.list_steps(uow, tenant, run, agent=agent)
    return {"items": [s.model_dump(mode="json") for s in steps]}


@router.get("/runs/{run}/steps", response_model=None, responses=_STEPS)
async def run_steps(tenant: TenantName, run: RunName, request: Request) -> Any:
    """The run's steps (model calls, tool calls, its own), in the order they were recorded."""
    return await _steps(request, tenant, run, None)


@router.get("/agents/{agent}/runs/{run}/steps", response_model=None, responses=_STEPS)
async def agent_run_steps(
    tenant: TenantName, agent: AgentName, run: RunName, request: Request
) -> Any:
    """The steps of a run of the agent."""
    return await _steps(request, tenant, run, agent)


def _after(last_event_id: str | None) -> int:
    if last_event_id is None or last_event_id.strip() == "":
        return 0
    if not last_event_id.strip().isdigit():
        raise BadRequest(f"Last-Event-ID: {last_event_id!r} is not an event id of this stream")
    return int(last_event_id.strip())


async def _stream(
    request: Request, tenant: str, run: str, agent: str | None, last_event_id: str | None
) -> StreamingResponse:
    after = _after(last_event_id)
    async with _uow(request) as uow:
        await svc.get_run(uow, tenant, run, agent=agent)  # 404 before the stream starts
    settings = _container(request).settings
    deadline = time.monotonic() + settings.watch_max_timeout_s

    async def wait() -> bool:
        await asyncio.sleep(settings.watch_poll_interval_s)
        return time.monotonic() < deadline

    events = svc.follow_run_events(
        lambda: _uow(request), tenant, run, agent=agent, after_sequence=after, wait=wait
    )

    async def lines() -> AsyncIterator[bytes]:
        quiet_since = time.monotonic()
        async for event in events:
            if event is None:  # nothing new: a comment now and then keeps proxies from idling
                if time.monotonic() - quiet_since >= KEEPALIVE_S:
                    quiet_since = time.monotonic()
                    yield b": keepalive\n\n"
                continue
            quiet_since = time.monotonic()
            data = json.dumps(event.data, separators=(",", ":"))
            yield f"id: {event.sequence}\nevent: {event.type}\ndata: {data}\n\n".encode()

    return StreamingResponse(
        lines(),
        media_type=EVENT_STREAM,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


_EVENTS = {
    200: {
        "description": "Server-sent events (WHATWG HTML, `text/event-stream`): `id:` the "
        "per-run sequence, `event:` the event type, `data:` a JSON RunEventOut. Ends after "
        "the run's terminal event; resume with `Last-Event-ID`.",
        "content": {EVENT_STREAM: {"schema": {"$ref": "#/components/schemas/RunEventOut"}}},
    },
    **_RUN_ERRORS,
}


@router.get("/runs/{run}/events", response_model=None, responses=_EVENTS)
async def run_events(
    tenant: TenantName, run: RunName, request: Request, last_event_id: LastEventId = None
) -> Any:
    """The run's events, live: first those after `Last-Event-ID` (all without it), then
    each new one as it is written, until the terminal one. Several clients may follow one
    run; a client that reconnects with `Last-Event-ID` misses none and sees none twice."""
    return await _stream(request, tenant, run, None, last_event_id)


@router.get("/agents/{agent}/runs/{run}/events", response_model=None, responses=_EVENTS)
async def agent_run_events(
    tenant: TenantName,
    agent: AgentName,
    run: RunName,
    request: Request,
    last_event_id: LastEventId = None,
) -> Any:
    """The events of a run of the agent (as `GET .../runs/{run}/events`)."""
    return await _stream(request, tenant, run, agent, last_event_id)


__all__ = ["RunEventOut", "router"]
