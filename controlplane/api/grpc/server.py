"""gRPC `agentos.v1.AgentService` (proto/agentos/v1/agent_service.proto): the same service
layer, authentication, authorization, rate limit and error catalogue as REST.

Errors: `google.rpc.Status` (grpcio-status) whose code is the catalogue's google.rpc code,
with a `google.rpc.ErrorInfo` (reason = the catalogue code, domain `agentos.io`), a
`google.rpc.BadRequest` naming invalid fields by JSON pointer, and a `google.rpc.RetryInfo`
when rate limited (AIP-193). Health checking (grpc.health.v1) and server reflection are
served beside it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import any_pb2, duration_pb2, json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from controlplane.api.context import ApiContext
from controlplane.api.errors import spec_of
from controlplane.api.grpc.gen import agent_service_pb2 as pb
from controlplane.api.grpc.gen import agent_service_pb2_grpc as pb_grpc
from controlplane.api.security import authorize
from controlplane.data.outbox.change_feed import OutboxFeed
from controlplane.domain.access import Principal, Role
from controlplane.domain.agents.lifecycle import IllegalTransition
from controlplane.domain.agents.model import DNS1123_LABEL
from controlplane.domain.errors import (
    AgentOSError,
    FieldError,
    RateLimited,
    ValidationFailed,
)
from controlplane.domain.selectors import parse_selector
from controlplane.service import agents as svc
from controlplane.service import listing, suspension
from controlplane.service.idempotency import IdempotencyRequest, request_hash

if TYPE_CHECKING:
    from controlplane.bootstrap import Container

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AgentService"].full_name
ERROR_DOMAIN = "agentos.io"
log = logging.getLogger(__name__)


def manifest_of(agent: pb.Agent) -> dict[str, Any]:
    """The REST body of an Agent message (the same object)."""
    md = agent.metadata
    metadata: dict[str, Any] = {
        "name": md.name,
        "labels": dict(md.labels),
        "annotations": dict(md.annotations),
    }
    if md.namespace:
        metadata["namespace"] = md.namespace
    if md.resource_version:
        metadata["resourceVersion"] = md.resource_version
    return {
        "apiVersion": agent.api_version,
        "kind": agent.kind,
        "metadata": metadata,
        "spec": json_format.MessageToDict(agent.spec),
    }


def agent_message(body: dict[str, Any]) -> pb.Agent:
    """The Agent message of a REST body."""
    md = body["metadata"]
    agent = pb.Agent(
        api_version=body["apiVersion"],
        kind=body["kind"],
        metadata=pb.ObjectMeta(
            name=md["name"],
            namespace=md.get("namespace", ""),
            uid=md.get("uid", ""),
            labels=md.get("labels", {}),
            annotations=md.get("annotations", {}),
            generation=md.get("generation", 0),
            resource_version=md.get("resourceVersion", ""),
            creation_timestamp=md.get("creationTimestamp", ""),
            deletion_timestamp=md.get("deletionTimestamp", ""),
        ),
    )
    agent.spec.update(body.get("spec", {}))
    agent.status.update(body.get("status", {}))
    return agent


def status_of(exc: BaseException) -> grpc.Status:
    """The google.rpc.Status of an error (INTERNAL for one not of ours)."""
    if isinstance(exc, AgentOSError | IllegalTransition):
        code, message = exc.code, str(exc)
    else:
        code, message = "INTERNAL", "internal error"
    spec = spec_of(code)
    details = [
        error_details_pb2.ErrorInfo(
            reason=code, domain=ERROR_DOMAIN, metadata={"http_status": str(spec.http_status)}
        )
    ]
    violations = [
        error_details_pb2.BadRequest.FieldViolation(field=e.pointer, description=e.message)
        for e in getattr(exc, "errors", [])
    ]
    if violations:
        details.append(error_details_pb2.BadRequest(field_violations=violations))
    if isinstance(exc, RateLimited):
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(max(1, int(exc.retry_after_s * 1000)))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    packed = []
    for detail in details:
        item = any_pb2.Any()
        item.Pack(detail)
        packed.append(item)
    return rpc_status.to_status(
        status_pb2.Status(code=getattr(code_pb2, spec.grpc_code), message=message, details=packed)
    )


def _check_tenant(tenant: str) -> None:
    if not tenant or len(tenant) > 63 or not re.fullmatch(DNS1123_LABEL, tenant):
        raise ValidationFailed(
            "tenant: a DNS-1123 label is required",
            errors=[FieldError("/tenant", "a DNS-1123 label (the tenant)")],
        )


class AgentService(pb_grpc.AgentServiceServicer):
    """The servicer: translate, authorize, call the service layer, translate back."""

    def __init__(self, container: Container) -> None:
        self.container = container
        self.ctx = ApiContext.of(container)
        self.feed = OutboxFeed(container.engine)

    async def _caller(
        self, context: grpc.aio.ServicerContext, tenant: str, role: Role
    ) -> Principal:
        metadata = {k.lower(): v for k, v in (context.invocation_metadata() or ())}
        header = str(metadata.get("authorization", ""))
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        principal = await self.ctx.authenticate(token)
        _check_tenant(tenant)
        authorize(principal, tenant, role)
        return principal

    async def _fail(self, context: grpc.aio.ServicerContext, exc: BaseException) -> None:
        if not isinstance(exc, AgentOSError | IllegalTransition):
            log.exception("unhandled error in gRPC call", exc_info=exc)
        await context.abort_with_status(status_of(exc))

    async def Create(self, request: pb.CreateRequest, context: Any) -> pb.Agent:
        try:
            principal = await self._caller(context, request.tenant, Role.EDITOR)
            manifest = manifest_of(request.agent)
            idempotency = None
            if request.request_id:
                if len(request.request_id) > 255:
                    raise ValidationFailed(
                        "request_id: at most 255 characters",
                        errors=[FieldError("/request_id", "at most 255 characters")],
                    )
                idempotency = IdempotencyRequest(
                    tenant=request.tenant,
                    principal=principal.name,
                    key=request.request_id,
                    request_hash=request_hash(
                        f"POST /api/v1/tenants/{request.tenant}/agents", manifest
                    ),
                    retention_s=self.container.settings.idempotency_retention_s,
                )
            async with self.container.uow(principal.audit_name) as uow:
                result = await svc.create_agent(
                    uow, request.tenant, manifest, idempotency=idempotency
                )
            if result.replayed:
                context.set_trailing_metadata((("idempotent-replayed", "true"),))
            elif result.agent_id is not None:
                self.container.notify(result.agent_id)
            return agent_message(result.body)
        except BaseException as exc:
            await self._fail(context, exc)
            raise

    async def Get(self, request: pb.GetRequest, context: Any) -> pb.Agent:
        try:
            await self._caller(context, request.tenant, Role.VIEWER)
            async with self.container.uow() as uow:
                record = await uow.agents.get(request.tenant, request.name)
            return agent_message(record.to_manifest())
        except BaseException as exc:
            await self._fail(context, exc)
            raise

    async def List(self, request: pb.ListRequest, context: Any) -> pb.ListResponse:
        try:
            await self._caller(context, request.tenant, Role.VIEWER)
            if request.page_size < 0:
                raise ValidationFailed(
                    "page_size: must not be negative",
                    errors=[FieldError("/page_size", "must not be negative")],
                )
            size = min(request.page_size or listing.DEFAULT_LIMIT, listing.MAX_LIMIT)
            page = await listing.list_agents(
                self.container.uow,
                self.feed,
                request.tenant,
                limit=size,
                continue_token=request.page_token or None,
                requirements=parse_selector(request.label_selector),
            )
            return pb.ListResponse(
                agents=[agent_message(a.to_manifest()) for a in page.items],
                next_page_token=page.continue_token or "",
                resource_version=str(page.resource_version),
            )
        except BaseException as exc:
            await self._fail(context, exc)
            raise

    async def Update(self, request: pb.UpdateRequest, context: Any) -> pb.Agent:
        try:
            principal = await self._caller(context, request.tenant, Role.EDITOR)
            manifest = manifest_of(request.agent)
            expected = manifest["metadata"].pop("resourceVersion", None)
            async with self.container.uow(principal.audit_name) as uow:
                if not request.allow_missing:
                    await uow.agents.get(request.tenant, request.agent.metadata.name)
                result = await svc.apply_agent(
                    uow, request.tenant, manifest, expected_resource_version=expected
                )
            self.container.notify(result.agent.id)
            return agent_message(result.agent.to_manifest())
        except BaseException as exc:
            await self._fail(context, exc)
            raise

    async def Delete(self, request: pb.DeleteRequest, context: Any) -> pb.Agent:
        try:
            principal = await self._caller(context, request.tenant, Role.EDITOR)
            async with self.container.uow(principal.audit_name) as uow:
                record = await svc.delete_agent(
                    uow,
                    request.tenant,
                    request.name,
                    expected_resource_version=request.etag or None,
                )
            self.container.notify(record.id)
            return agent_message(record.to_manifest())
        except BaseException as exc:
            await self._fail(context, exc)
            raise

    async def Suspend(self, request: pb.SuspendRequest, context: Any) -> pb.Agent:
        try:
            principal = await self._caller(context, request.tenant, Role.EDITOR)
            async with self.container.uow(principal.audit_name) as uow:
                record = await suspension.suspend_agent(uow, request.tenant, request.name)
            self.container.notify(record.id)
            return agent_message(record.to_manifest())
        except BaseException as exc:
            await self._fail(context, exc)
            raise

    async def Resume(self, request: pb.ResumeRequest, context: Any) -> pb.Agent:
        try:
            principal = await self._caller(context, request.tenant, Role.EDITOR)
            async with self.container.uow(principal.audit_name) as uow:
                record = await suspension.resume_agent(uow, request.tenant, request.name)
            self.container.notify(record.id)
            return agent_message(record.to_manifest())
        except BaseException as exc:
            await self._fail(context, exc)
            raise

    async def Watch(self, request: pb.WatchRequest, context: Any) -> AsyncIterator[pb.WatchEvent]:
        try:
            await self._caller(context, request.tenant, Role.VIEWER)
            settings = self.container.settings
            max_s = settings.watch_max_timeout_s
            events = listing.watch_agents(
                self.container.uow,
                self.feed,
                request.tenant,
                since=listing.parse_resource_version(request.resource_version or None),
                requirements=parse_selector(request.label_selector),
                timeout_s=min(request.timeout_seconds or max_s, max_s),
                poll_interval_s=settings.watch_poll_interval_s,
            )
            async for event in events:
                message = pb.WatchEvent(
                    type=event.type, resource_version=str(event.resource_version)
                )
                if event.object is not None:
                    message.object.CopyFrom(_partial_agent(event.object))
                if event.event is not None:
                    e = event.event
                    message.event.CopyFrom(
                        pb.Event(
                            event_id=e["event_id"],
                            event_type=e["event_type"],
                            sequence=e["sequence"],
                            occurred_at=e["occurred_at"],
                        )
                    )
                    message.event.payload.update(e["payload"])
                yield message
        except BaseException as exc:
            await self._fail(context, exc)
            raise


def _partial_agent(body: dict[str, Any]) -> pb.Agent:
    """An Agent message from a watch object (a gone agent's has only its metadata)."""
    return agent_message({"spec": {}, "status": {}, **body})


def build_server(container: Container, address: str) -> tuple[grpc.aio.Server, Any]:
    """A gRPC server with AgentService, RunService, health checking and reflection, bound to
    `address` (`host:port`), and its health servicer (see `mark_serving`); call
    `await server.start()`. Raises RuntimeError when the address cannot be bound."""
    server = grpc.aio.server()
    pb_grpc.add_AgentServiceServicer_to_server(  # type: ignore[no-untyped-call]
        AgentService(container), server
    )
    from controlplane.api.grpc import approvals, runs  # they import this module's status_of

    runs.add_run_service(container, server)
    approvals.add_approval_service(container, server)
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            runs.SERVICE_NAME,
            approvals.SERVICE_NAME,
            approvals.REPLAY_SERVICE_NAME,
            health.SERVICE_NAME,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    if server.add_insecure_port(address) == 0:
        raise RuntimeError(f"cannot listen on {address} for gRPC")
    return server, checker


async def mark_serving(checker: Any) -> None:
    """Report SERVING for the whole server, AgentService and RunService."""
    from controlplane.api.grpc.runs import SERVICE_NAME as RUN_SERVICE

    for name in ("", SERVICE_NAME, RUN_SERVICE):
        await checker.set(name, health_pb2.HealthCheckResponse.SERVING)
