"""gRPC `agentos.v1.ApprovalService` and `agentos.v1.ReplayService`
(proto/agentos/v1/approval_service.proto): the approval and replay use cases of REST
(controlplane/api/rest/approvals.py, replay.py) with the same authentication, authorization
(viewers list, editors decide and replay), audit and error catalogue as RunService."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import json_format, struct_pb2

from controlplane.api.grpc.gen import approval_service_pb2 as pb
from controlplane.api.grpc.gen import approval_service_pb2_grpc as pb_grpc
from controlplane.api.grpc.gen import run_service_pb2 as run_pb
from controlplane.api.grpc.runs import RunService, plain_json, run_message
from controlplane.domain.access import Role
from controlplane.service import approvals as svc
from controlplane.service import replay

if TYPE_CHECKING:
    from controlplane.bootstrap import Container

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ApprovalService"].full_name
REPLAY_SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ReplayService"].full_name


def _struct(obj: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(obj)
    return message


def decision_body(request: pb.DecideApprovalRequest) -> dict[str, Any]:
    """The REST body of a DecideApprovalRequest (the same validation follows)."""
    body: dict[str, Any] = {"decision": request.decision, "comment": request.comment}
    if request.HasField("edits"):
        body["edits"] = plain_json(json_format.MessageToDict(request.edits))
    return body


class ApprovalService(pb_grpc.ApprovalServiceServicer):
    """The servicer; authentication and errors as RunService's (one `RunService` helper)."""

    def __init__(self, container: Container) -> None:
        self.container = container
        self._runs = RunService(container)

    async def ListApprovals(
        self, request: pb.ListApprovalsRequest, context: Any
    ) -> pb.ListApprovalsResponse:
        async def work() -> pb.ListApprovalsResponse:
            await self._runs._caller(context, request.tenant, Role.VIEWER)
            async with self.container.uow() as uow:
                found = await svc.list_approvals(
                    uow, request.tenant, state=request.state or None, run=request.run or None
                )
            return pb.ListApprovalsResponse(approvals=[_struct(a.to_object()) for a in found])

        return await self._runs._call(context, work)

    async def DecideApproval(
        self, request: pb.DecideApprovalRequest, context: Any
    ) -> struct_pb2.Struct:
        async def work() -> struct_pb2.Struct:
            principal = await self._runs._caller(context, request.tenant, Role.EDITOR)
            async with self.container.uow(principal.audit_name) as uow:
                decided = await svc.decide(
                    uow, request.tenant, request.run, request.approval, decision_body(request)
                )
            return _struct(decided.approval.to_object())

        return await self._runs._call(context, work)


class ReplayService(pb_grpc.ReplayServiceServicer):
    """The replay servicer; authentication and errors as RunService's."""

    def __init__(self, container: Container) -> None:
        self.container = container
        self._runs = RunService(container)

    async def Replay(self, request: pb.ReplayRunRequest, context: Any) -> run_pb.Run:
        async def work() -> run_pb.Run:
            principal = await self._runs._caller(context, request.tenant, Role.EDITOR)
            body: dict[str, Any] = {"mode": request.mode or "recorded"}
            if request.from_step:
                body["fromStep"] = request.from_step
            async with self.container.uow(principal.audit_name) as uow:
                made = await replay.replay_run(uow, request.tenant, request.run, body)
            return run_message(made.body)

        return await self._runs._call(context, work)


def add_approval_service(container: Container, server: grpc.aio.Server) -> None:
    """Serve ApprovalService and ReplayService on `server`."""
    pb_grpc.add_ApprovalServiceServicer_to_server(  # type: ignore[no-untyped-call]
        ApprovalService(container), server
    )
    pb_grpc.add_ReplayServiceServicer_to_server(  # type: ignore[no-untyped-call]
        ReplayService(container), server
    )
