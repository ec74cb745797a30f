"""The gateway's approval routes (architecture/gateway-protocol.md, "Approvals"): a run asks
for a human's decision on a step, then long-polls for it, as `runs:next` polls for runs."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request

from controlplane.domain.runs.approvals import Approval, ApprovalState
from controlplane.gateway.app import MAX_WAIT_S, Caller, _gateway
from controlplane.service import approvals as svc

POLL_S = 0.25  # how often a waiting request looks at the approval again
router = APIRouter(prefix="/gateway/v1", tags=["gateway"])


def approval_view(approval: Approval) -> dict[str, Any]:
    """An approval as the SDK reads it: the API's object (id, state, arguments, ...)."""
    return approval.to_object()


@router.post("/runs/{run}/approvals", response_model=None)
async def request_approval(
    request: Request, run: str, who: Caller, body: Annotated[Any, Body()]
) -> dict[str, Any]:
    """Ask for approval of step `callId` (idempotent by it): the approval, pending or, when
    an earlier attempt already asked, as decided."""
    async with _gateway(request).uow() as uow:
        approval = await svc.request(uow, who, run, body)
    return approval_view(approval)


@router.get("/runs/{run}/approvals/{approval}", response_model=None)
async def wait_approval(
    request: Request,
    run: str,
    approval: str,
    who: Caller,
    wait_seconds: Annotated[float, Query(alias="waitSeconds", ge=0, le=MAX_WAIT_S)] = 0,
) -> dict[str, Any]:
    """The approval; with `waitSeconds`, answered as soon as it is decided or when that
    time is up (still `pending`)."""
    gateway = _gateway(request)
    until = time.monotonic() + wait_seconds
    while True:
        async with gateway.uow() as uow:
            found = await svc.of_agent_run(uow, who, run, approval)
        if found.state is not ApprovalState.PENDING or time.monotonic() >= until:
            return approval_view(found)
        if await request.is_disconnected():
            return approval_view(found)
        await asyncio.sleep(POLL_S)
