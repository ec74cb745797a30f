"""`GET /api/v1/tenants/{tenant}/agents/{name}/logs`: the output of the agent's sandbox
(viewer), as `kubectl logs` gives a Pod's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import PlainTextResponse, StreamingResponse

from controlplane.api.errors import responses
from controlplane.api.security import TenantName, tenant_access
from controlplane.domain.access import Role
from controlplane.domain.agents.model import DNS1123_LABEL
from controlplane.service import logs as svc

if TYPE_CHECKING:
    from controlplane.bootstrap import Container

router = APIRouter(
    prefix="/api/v1/tenants/{tenant}",
    tags=["agents"],
    dependencies=[Depends(tenant_access(read=Role.VIEWER, write=Role.EDITOR))],
)
FOLLOW_POLL_S = 0.5


@router.get(
    "/agents/{name}/logs",
    response_model=None,
    responses={
        200: {
            "description": "The sandbox's output, `text/plain`; with `follow=true`, streamed.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **responses("TENANT_NOT_FOUND", "AGENT_NOT_FOUND"),
    },
)
async def agent_logs(
    tenant: TenantName,
    name: Annotated[str, Path(min_length=1, max_length=63, pattern=DNS1123_LABEL)],
    request: Request,
    tail_lines: Annotated[
        int, Query(alias="tailLines", ge=1, le=100_000, description="Lines from the end.")
    ] = 100,
    follow: Annotated[bool, Query(description="Keep streaming new output.")] = False,
) -> Any:
    """The last `tailLines` lines of the agent's sandbox output ("" while it has none);
    with `follow=true`, then every new line until the agent is deleted or the server's
    watch time (AGENTOS_WATCH_MAX_TIMEOUT_S) is up."""
    container: Container = request.app.state.container
    runtimes = container.runtimes()
    if not follow:
        async with container.uow() as uow:
            text = await svc.agent_logs(uow, runtimes, tenant, name, tail_lines)
        return PlainTextResponse(text)
    async with container.uow() as uow:
        await uow.agents.get(tenant, name)  # 404 before the stream starts
    deadline = time.monotonic() + container.settings.watch_max_timeout_s

    async def wait() -> bool:
        await asyncio.sleep(FOLLOW_POLL_S)
        return time.monotonic() < deadline

    lines = svc.follow_logs(container.uow, runtimes, tenant, name, tail_lines=tail_lines, wait=wait)

    async def body() -> AsyncIterator[bytes]:
        async for line in lines:
            yield line.encode() + b"\n"

    return StreamingResponse(body(), media_type="text/plain")
