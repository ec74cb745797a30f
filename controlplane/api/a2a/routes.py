"""`/a2a/{tenant}/{agent}`: each agent as an A2A server (A2A specification v1.0, JSON-RPC
binding; architecture/a2a.md).

    GET  /a2a/{tenant}/{agent}/.well-known/agent-card.json    the agent card
    POST /a2a/{tenant}/{agent}                                JSON-RPC 2.0 requests

Auth is REST's (controlplane/api/security.py), no second door: a bearer API token (401),
the tenant visible to the caller (404 TENANT_NOT_FOUND, as problem+json, before anything is
parsed), a viewer to read, an editor to send or cancel (403 PERMISSION_DENIED). An unknown
agent is 404 AGENT_NOT_FOUND. Everything after that is a JSON-RPC answer with HTTP 200.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse, StreamingResponse

from controlplane.api.a2a import card as cards
from controlplane.api.a2a import jsonrpc, methods
from controlplane.api.a2a.jsonrpc import A2AError
from controlplane.api.errors import responses
from controlplane.api.security import Caller, TenantName, authorize, tenant_access
from controlplane.domain.access import Role
from controlplane.domain.agents.model import DNS1123_LABEL
from controlplane.domain.errors import AgentNotFound, AgentOSError

if TYPE_CHECKING:
    from controlplane.bootstrap import Container
    from controlplane.domain.records import AgentRecord

router = APIRouter(
    prefix="/a2a/{tenant}/{agent}",
    tags=["a2a"],
    # Every caller must see the tenant; the editor's role is checked per method.
    dependencies=[Depends(tenant_access(read=Role.VIEWER, write=Role.VIEWER))],
)
AgentName = Annotated[
    str, Path(min_length=1, max_length=63, pattern=DNS1123_LABEL, description="Agent name.")
]
VERSION_HEADER = "A2A-Version"
EVENT_STREAM = "text/event-stream"
KEEPALIVE = b": keepalive\n\n"


def _container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


async def _agent(request: Request, tenant: str, name: str) -> AgentRecord:
    async with _container(request).uow("system") as uow:
        found = await uow.agents.find(tenant, name)
    if found is None or found.deletion_requested_at is not None:
        raise AgentNotFound(f"agent {name!r} not found in tenant {tenant!r}")
    return found


def _base_url(request: Request, tenant: str, agent: str) -> str:
    return str(request.base_url).rstrip("/") + f"/a2a/{tenant}/{agent}"


@router.get(
    "/.well-known/agent-card.json",
    response_model=None,
    responses={
        200: {"description": "The A2A AgentCard (v1.0, ProtoJSON)"},
        **responses("TENANT_NOT_FOUND", "AGENT_NOT_FOUND"),
    },
)
async def agent_card(tenant: TenantName, agent: AgentName, request: Request) -> Any:
    """The agent's A2A card: its name, description, skills, the JSON-RPC interface at
    `/a2a/{tenant}/{agent}` and the bearer-token security scheme."""
    found = await _agent(request, tenant, agent)
    return JSONResponse(cards.agent_card(found, _base_url(request, tenant, agent)))


def _check_version(request: Request) -> None:
    """A2A-Version 1.x is spoken; absent is taken as 1.0 (the one version served)."""
    version = request.headers.get(VERSION_HEADER, "").strip()
    if version and version.split(".")[0] != "1":
        raise A2AError(jsonrpc.VERSION_NOT_SUPPORTED, f"A2A-Version {version!r}: 1.0 is served")


def _sse(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


async def _stream(
    request_id: Any, first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]
) -> AsyncIterator[bytes]:
    yield _sse(jsonrpc.result(request_id, first))
    try:
        async for item in rest:
            yield _sse(jsonrpc.result(request_id, item))
    except A2AError as exc:
        yield _sse(jsonrpc.error(request_id, exc))
    except AgentOSError as exc:
        yield _sse(jsonrpc.error(request_id, jsonrpc.from_agentos(exc)))


async def _answer(call: methods.Call, request_id: Any, method: str, params: dict[str, Any]) -> Any:
    if method in methods.UNARY:
        return JSONResponse(jsonrpc.result(request_id, await methods.UNARY[method](call, params)))
    if method not in methods.STREAMING:
        raise A2AError(jsonrpc.METHOD_NOT_FOUND, f"method {method!r} is not served")
    items = methods.STREAMING[method](call, params)
    first = await anext(items)  # errors before the first event are a plain JSON-RPC answer
    return StreamingResponse(
        _stream(request_id, first, items),
        media_type=EVENT_STREAM,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post(
    "",
    response_model=None,
    responses={
        200: {
            "description": "A JSON-RPC 2.0 response, or for SendStreamingMessage and "
            "SubscribeToTask a `text/event-stream` of them"
        },
        **responses("TENANT_NOT_FOUND", "AGENT_NOT_FOUND", "PERMISSION_DENIED"),
    },
)
async def rpc(tenant: TenantName, agent: AgentName, request: Request, principal: Caller) -> Any:
    """One JSON-RPC request: SendMessage, SendStreamingMessage, GetTask, ListTasks,
    CancelTask, SubscribeToTask (A2A v1.0 method names)."""
    await _agent(request, tenant, agent)
    container = _container(request)
    call = methods.Call(
        tenant=tenant,
        agent=agent,
        principal=principal,
        uow=container.uow,
        settings=container.settings,
        authorize=lambda role: authorize(principal, tenant, role),
    )
    request_id: Any = None
    try:
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise A2AError(jsonrpc.PARSE_ERROR, "the body is not JSON") from None
        request_id, method, params = jsonrpc.parse_request(body)
        _check_version(request)
        return await _answer(call, request_id, method, params)
    except A2AError as exc:
        return JSONResponse(jsonrpc.error(request_id, exc))
    except StopAsyncIteration:
        return JSONResponse(
            jsonrpc.error(request_id, A2AError(jsonrpc.INTERNAL_ERROR, "the stream was empty"))
        )
    except AgentOSError as exc:
        if exc.code in ("PERMISSION_DENIED", "TENANT_NOT_FOUND", "UNAUTHENTICATED"):
            raise  # the same answer as REST's: problem+json 403 / 404 / 401
        return JSONResponse(jsonrpc.error(request_id, jsonrpc.from_agentos(exc)))
