"""The gateway's replay route (architecture/gateway-protocol.md, "Replay"): the SDK reports
a step of a recorded replay whose call differs from the origin's."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request

from controlplane.gateway.app import Caller, _gateway
from controlplane.service import replay as svc

router = APIRouter(prefix="/gateway/v1", tags=["gateway"])


@router.post("/runs/{run}/divergences", response_model=None)
async def divergence(
    request: Request, run: str, who: Caller, body: Annotated[Any, Body()]
) -> dict[str, Any]:
    """Record a divergence (idempotent by callId): the divergence as recorded."""
    async with _gateway(request).uow() as uow:
        found = await svc.record_divergence(uow, who, run, body)
    return found.model_dump(mode="json")
