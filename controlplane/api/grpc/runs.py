"""gRPC `agentos.v1.RunService` (proto/agentos/v1/run_service.proto): the runs use cases of
REST (controlplane/api/rest/runs.py) with the same authentication, authorization, rate limit
and error catalogue (errors as in controlplane/api/grpc/server.py: google.rpc.Status with an
ErrorInfo whose reason is the catalogue code)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf import json_format, struct_pb2

from controlplane.api.context import ApiContext
from controlplane.api.grpc.gen import run_service_pb2 as pb
from controlplane.api.grpc.gen import run_service_pb2_grpc as pb_grpc
from controlplane.api.grpc.server import _check_tenant as check_tenant
from controlplane.api.grpc.server import status_of
from controlplane.api.security import authorize
from controlplane.domain.access import Principal, Role
from controlplane.domain.agents.lifecycle import IllegalTransition
from controlplane.domain.errors import AgentOSError, FieldError, ValidationFailed
from controlplane.service import listing
from controlplane.service import runs as svc
from controlplane.service.idempotency import IdempotencyRequest, request_hash

if TYPE_CHECKING:
    from controlplane.bootstrap import Container

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RunService"].full_name
R = TypeVar("R")
log = logging.getLogger(__name__)


def plain_json(value: Any) -> Any:
    """A JSON value from a google.protobuf.Value/Struct, with integral numbers as ints
    (protobuf has only doubles; REST's `1` must read `1` here too)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: plain_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_json(v) for v in value]
    return value


def run_body(request: pb.CreateRunRequest) -> dict[str, Any]:
    """The REST body of a CreateRunRequest (the same validation follows)."""
    body: dict[str, Any] = {}
    if request.HasField("input"):
        body["input"] = plain_json(json_format.MessageToDict(request.input))
    if request.timeout_seconds:
        body["timeoutSeconds"] = request.timeout_seconds
    if request.labels:
        body["labels"] = dict(request.labels)
    return body


def run_message(body: dict[str, Any]) -> pb.Run:
    """The Run message of a REST Run object."""
    md = body["metadata"]
    run = pb.Run(
        api_version=body["apiVersion"],
        kind=body["kind"],
        metadata=pb.RunMeta(
            name=md["name"],
            uid=md["uid"],
            tenant=md["tenant"],
            agent=md["agent"],
            labels=md.get("labels", {}),
            creation_timestamp=md["creationTimestamp"],
            resource_version=md["resourceVersion"],
        ),
    )
    run.spec.update(body["spec"])
    run.status.update(body["status"])
    return run


def _struct(obj: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(obj)
    return message


class RunService(pb_grpc.RunServiceServicer):
    """The servicer: translate, authorize, call the service layer, translate back."""

    def __init__(self, container: Container) -> None:
        self.container = container
        self.ctx = ApiContext.of(container)

    async def _caller(self, context: Any, tenant: str, role: Role) -> Principal:
        metadata = {k.lower(): v for k, v in (context.invocation_metadata() or ())}
        header = str(metadata.get("authorization", ""))
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        principal = await self.ctx.authenticate(token)
        check_tenant(tenant)
        authorize(principal, tenant, role)
        return principal

    async def _call(self, context: Any, work: Callable[[], Awaitable[R]]) -> R:
        try:
            return await work()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            await _abort(context, exc)
            raise

    async def Create(self, request: pb.CreateRunRequest, context: Any) -> pb.Run:
        async def work() -> pb.Run:
            principal = await self._caller(context, request.tenant, Role.EDITOR)
            body = run_body(request)
            idempotency = None
            if request.request_id:
                if len(request.request_id) > 255:
                    raise ValidationFailed(
                        "request_id: at most 255 characters",
                        errors=[FieldError("/request_id", "at most 255 characters")],
                    )
                operation = f"POST /api/v1/tenants/{request.tenant}/agents/{request.agent}/runs"
                idempotency = IdempotencyRequest(
                    tenant=request.tenant,
                    principal=principal.name,
                    key=request.request_id,
                    request_hash=request_hash(operation, body),
                    retention_s=self.container.settings.idempotency_retention_s,
                )
            async with self.container.uow(principal.audit_name) as uow:
                result = await svc.create_run(
                    uow, request.tenant, request.agent, body, idempotency=idempotency
                )
            if result.replayed:
                context.set_trailing_metadata((("idempotent-replayed", "true"),))
            return run_message(result.body)

        return await self._call(context, work)

    async def Get(self, request: pb.GetRunRequest, context: Any) -> pb.Run:
        async def work() -> pb.Run:
            await self._caller(context, request.tenant, Role.VIEWER)
            async with self.container.uow() as uow:
                record = await svc.get_run(
                    uow, request.tenant, request.name, agent=request.agent or None
                )
            return run_message(record.to_object())

        return await self._call(context, work)

    async def List(self, request: pb.ListRunsRequest, context: Any) -> pb.ListRunsResponse:
        async def work() -> pb.ListRunsResponse:
            await self._caller(context, request.tenant, Role.VIEWER)
            if request.page_size < 0:
                raise ValidationFailed(
                    "page_size: must not be negative",
                    errors=[FieldError("/page_size", "must not be negative")],
                )
            async with self.container.uow() as uow:
                page = await svc.list_runs(
                    uow,
                    request.tenant,
                    agent=request.agent or None,
                    phases=list(request.phases),
                    label_selector=request.label_selector or None,
                    limit=min(request.page_size or listing.DEFAULT_LIMIT, listing.MAX_LIMIT),
                    continue_token=request.page_token or None,
                )
            return pb.ListRunsResponse(
                runs=[run_message(r.to_object()) for r in page.items],
                next_page_token=page.continue_token or "",
            )

        return await self._call(context, work)

    async def Cancel(self, request: pb.CancelRunRequest, context: Any) -> pb.Run:
        async def work() -> pb.Run:
            principal = await self._caller(context, request.tenant, Role.EDITOR)
            async with self.container.uow(principal.audit_name) as uow:
                record = await svc.cancel_run(
                    uow, request.tenant, request.name, agent=request.agent or None
                )
            return run_message(record.to_object())

        return await self._call(context, work)

    async def ListSteps(self, request: pb.ListStepsRequest, context: Any) -> pb.ListStepsResponse:
        async def work() -> pb.ListStepsResponse:
            await self._caller(context, request.tenant, Role.VIEWER)
            async with self.container.uow() as uow:
                steps = await svc.list_steps(
                    uow, request.tenant, request.name, agent=request.agent or None
                )
            return pb.ListStepsResponse(steps=[_struct(s.model_dump(mode="json")) for s in steps])

        return await self._call(context, work)

    async def WatchEvents(
        self, request: pb.WatchRunEventsRequest, context: Any
    ) -> AsyncIterator[pb.RunEvent]:
        try:
            await self._caller(context, request.tenant, Role.VIEWER)
            if request.after_sequence < 0:
                raise ValidationFailed(
                    "after_sequence: must not be negative",
                    errors=[FieldError("/after_sequence", "must not be negative")],
                )
            agent = request.agent or None
            async with self.container.uow() as uow:
                await svc.get_run(uow, request.tenant, request.name, agent=agent)
            settings = self.container.settings
            deadline = time.monotonic() + settings.watch_max_timeout_s

            async def wait() -> bool:
                await asyncio.sleep(settings.watch_poll_interval_s)
                return time.monotonic() < deadline

            events = svc.follow_run_events(
                self.container.uow,
                request.tenant,
                request.name,
                agent=agent,
                after_sequence=request.after_sequence,
                wait=wait,
            )
            async for event in events:
                if event is not None:
                    yield pb.RunEvent(
                        sequence=event.sequence, type=event.type, data=_struct(event.data)
                    )
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            await _abort(context, exc)
            raise


async def _abort(context: Any, exc: BaseException) -> None:
    """End the call with the google.rpc.Status of `exc` (logged when it is not ours)."""
    if not isinstance(exc, AgentOSError | IllegalTransition):
        log.exception("unhandled error in gRPC call", exc_info=exc)
    await context.abort_with_status(status_of(exc))


def add_run_service(container: Container, server: grpc.aio.Server) -> None:
    """Serve RunService on `server`."""
    pb_grpc.add_RunServiceServicer_to_server(  # type: ignore[no-untyped-call]
        RunService(container), server
    )
