"""The gateway's HTTP application: the run protocol of architecture/gateway-protocol.md
under `/gateway/v1`, answering errors as RFC 9457 problem+json from the one catalogue."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from controlplane.api.errors import (
    agentos_error_handler,
    http_error_handler,
    request_validation_handler,
    unexpected_error_handler,
)
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.agents.lifecycle import IllegalTransition
from controlplane.domain.errors import AgentOSError, BadRequest, Unauthenticated
from controlplane.domain.events.envelope import utcnow
from controlplane.domain.runs.model import ErrorInfo
from controlplane.gateway import model_proxy
from controlplane.gateway.auth import CredentialCache
from controlplane.gateway.metering import Meter
from controlplane.gateway.model_proxy import ModelProxy
from controlplane.gateway.upstream import Upstream
from controlplane.gateway.views import claim_view
from controlplane.messaging.run_queues import RunQueues
from controlplane.observability import run_metrics
from controlplane.service import run_execution as runs
from controlplane.service.run_execution import AgentIdentity, Settle

MAX_WAIT_S = 30.0


class Gateway:
    """What the routes share: the UnitOfWork factory, the run queues, the credential cache,
    and the model proxy (its meter and upstream client; `upstream` None: a new one)."""

    def __init__(
        self,
        uow: Callable[[], UnitOfWork],
        queues: RunQueues,
        *,
        auth_ttl_s: float = 2.0,
        upstream: Upstream | None = None,
    ) -> None:
        self.uow = uow
        self.queues = queues
        self.credentials = CredentialCache(uow, auth_ttl_s)
        self.models = ModelProxy(Meter(uow), upstream or Upstream())

    async def settle(self, settle: Settle) -> None:
        """Send `settle` to the delivery's ack subject."""
        if settle.reply is None:
            return
        if settle.action == "ack":
            await self.queues.ack(settle.reply)
        elif settle.action == "nak":
            await self.queues.nak(settle.reply, settle.delay_s)
        elif settle.action == "term":
            await self.queues.term(settle.reply)


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


async def _caller(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> AgentIdentity:
    scheme, _, secret = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secret:
        raise Unauthenticated("a sandbox credential is required (Authorization: Bearer ...)")
    return await _gateway(request).credentials.authenticate(secret.strip())


Caller = Annotated[AgentIdentity, Depends(_caller)]
router = APIRouter(prefix="/gateway/v1", tags=["gateway"])


@router.post("/runs:next", response_model=None)
async def next_run(
    request: Request, who: Caller, body: Annotated[dict[str, Any] | None, Body()] = None
) -> Response:
    """Long poll for the caller's next run: 200 {run, journal}, or 204 after `waitSeconds`."""
    gateway = _gateway(request)
    wait_s = min(max(float((body or {}).get("waitSeconds", 20)), 0.0), MAX_WAIT_S)
    spec = who.runs
    polled_at = utcnow()
    until = time.monotonic() + wait_s
    while True:
        left = until - time.monotonic()
        delivery = await gateway.queues.next_delivery(who.tenant, who.agent_id, spec, left)
        if delivery is None:
            break
        if await request.is_disconnected():
            await gateway.queues.nak(delivery.reply)  # never hand a run to a caller gone
            break
        async with gateway.uow() as uow:
            claim = await runs.claim(
                uow,
                who,
                delivery.run_id,
                delivery.reply,
                delivery.stream_seq,
                delivery.num_delivered,
            )
        if claim is not None:
            _observe_start(claim, polled_at)
            return JSONResponse(claim_view(claim, delivery.traceparent, spec.approval))
        await gateway.queues.ack(delivery.reply)  # a run already ended: drop its message
        if time.monotonic() >= until:
            break
    return Response(status_code=204)


def _observe_start(claim: runs.Claim, polled_at: datetime) -> None:
    """The handler took a delivery: queue wait, and dispatch latency when the handler was
    already waiting for work when the run was created (the SLI of architecture/slos.md)."""
    run = claim.run
    run_metrics.run_started(
        run.status.attempt,
        (utcnow() - run.created_at).total_seconds(),
        handler_was_waiting=polled_at <= run.created_at,
    )


def _attempt(body: dict[str, Any] | None) -> int | None:
    """The delivery attempt a request speaks for (fencing), when it says."""
    value = (body or {}).get("attempt")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadRequest(f"attempt: {value!r} is not a delivery number (1, 2, ...)")
    return value


@router.post("/runs/{run}/heartbeat", response_model=None)
async def heartbeat(
    request: Request, run: str, who: Caller, body: Annotated[dict[str, Any] | None, Body()] = None
) -> dict[str, Any]:
    """The caller still works on `run`: extend its delivery; tell it of a cancellation."""
    gateway = _gateway(request)
    async with gateway.uow() as uow:
        beat = await runs.heartbeat(uow, who, run, _attempt(body))
    if beat.reply is not None:
        await gateway.queues.in_progress(beat.reply)
    return {"cancelRequested": beat.cancel_requested, "deadline": beat.deadline}


@router.post("/runs/{run}/steps", response_model=None)
async def record_step(
    request: Request, run: str, who: Caller, body: Annotated[Any, Body()]
) -> dict[str, Any]:
    """Journal one finished step (idempotent by callId)."""
    async with _gateway(request).uow() as uow:
        _, written = await runs.record_step(uow, who, run, body)
    return {"recorded": True, "duplicate": not written}


@router.post("/runs/{run}/checkpoint", status_code=204, response_model=None)
async def checkpoint(
    request: Request, run: str, who: Caller, body: Annotated[dict[str, Any], Body()]
) -> Response:
    """Save the run's state; the next attempt starts from it."""
    if "state" not in body:
        raise BadRequest("a checkpoint needs `state`")
    async with _gateway(request).uow() as uow:
        await runs.checkpoint(uow, who, run, body["state"], body.get("callId"), _attempt(body))
    return Response(status_code=204)


@router.post("/runs/{run}/result", response_model=None)
async def result(
    request: Request, run: str, who: Caller, body: Annotated[dict[str, Any], Body()]
) -> dict[str, Any]:
    """The handler's output, or its error (retried up to spec.runs.maxAttempts)."""
    gateway = _gateway(request)
    error = ErrorInfo.model_validate(body["error"]) if body.get("error") else None
    spec = who.runs
    async with gateway.uow() as uow:
        settle = await runs.finish(
            uow,
            who,
            run,
            output=body.get("output"),
            error=error,
            max_attempts=spec.maxAttempts,
            attempt=_attempt(body),
        )
    await gateway.settle(settle)
    return {"accepted": True}


@router.post("/runs/{run}/release", status_code=204, response_model=None)
async def release(
    request: Request, run: str, who: Caller, body: Annotated[dict[str, Any] | None, Body()] = None
) -> Response:
    """The caller gives `run` back unfinished: it is delivered again at once."""
    gateway = _gateway(request)
    async with gateway.uow() as uow:
        settle = await runs.release(uow, who, run, _attempt(body))
    await gateway.settle(settle)
    return Response(status_code=204)


def create_gateway_app(gateway: Gateway) -> FastAPI:
    """The gateway's ASGI application on `gateway`: the run protocol and the model proxy
    (architecture/model-gateway.md), whose upstream connections close with the app."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await gateway.models.aclose()

    app = FastAPI(
        title="Agent OS gateway",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    app.add_exception_handler(AgentOSError, agentos_error_handler)
    app.add_exception_handler(IllegalTransition, agentos_error_handler)
    app.add_exception_handler(RequestValidationError, request_validation_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(router)
    app.include_router(model_proxy.router)
    # Imported here: the approval and replay routes use this module's dependencies.
    from controlplane.gateway.approvals import router as approvals
    from controlplane.gateway.replay import router as replay

    app.include_router(approvals)
    app.include_router(replay)
    return app
