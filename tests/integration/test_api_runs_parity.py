"""REST and gRPC `RunService` give the same runs, steps, events and error codes: one scenario
through both against one control plane on real PostgreSQL (gRPC over a loopback socket)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from controlplane.api.errors import CATALOGUE
from controlplane.api.grpc.gen import run_service_pb2 as pb
from controlplane.api.grpc.gen import run_service_pb2_grpc as pb_grpc
from controlplane.api.grpc.runs import plain_json
from controlplane.api.grpc.server import build_server, mark_serving
from harness.ports import free_port
from tests.integration.api_harness import Api, running_api
from tests.integration.runs_helpers import agent, record_step

pytestmark = pytest.mark.postgres

Outcome = tuple[str, Any]
_VARYING = ("name", "uid", "tenant", "creationTimestamp")


def normal(obj: Any) -> Any:
    """A run, step or event without what differs by nature between two creations."""
    obj = plain_json(json.loads(json.dumps(obj)))
    if isinstance(obj, dict):
        if "metadata" in obj:
            obj["metadata"] = {k: v for k, v in obj["metadata"].items() if k not in _VARYING}
        obj.pop("occurredAt", None)
        if isinstance(obj.get("status"), dict):
            obj["status"].pop("finishedAt", None)
        return {k: normal(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [normal(v) for v in obj]
    return obj


class Rest:
    def __init__(self, api: Api, token: str, tenant: str) -> None:
        self.client = api.client(token)
        self.base = f"/api/v1/tenants/{tenant}"

    async def _call(self, method: str, url: str, **kw: Any) -> Outcome:
        r = await self.client.request(method, self.base + url, **kw)
        if r.status_code >= 400:
            return ("error", r.json()["code"])
        if r.headers["content-type"].startswith("text/event-stream"):
            lines = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
            return ("ok", [json.loads(line) for line in lines])
        body = r.json()
        return ("ok", body.get("items", body))

    async def create(self, agent_name: str, body: dict[str, Any], key: str) -> Outcome:
        headers = {"Idempotency-Key": key} if key else {}
        return await self._call("POST", f"/agents/{agent_name}/runs", json=body, headers=headers)

    async def get(self, name: str, agent_name: str = "") -> Outcome:
        prefix = f"/agents/{agent_name}" if agent_name else ""
        return await self._call("GET", f"{prefix}/runs/{name}")

    async def list(self, agent_name: str, phase: str) -> Outcome:
        params = {"agent": agent_name, **({"phase": phase} if phase else {})}
        return await self._call("GET", "/runs", params=params)

    async def cancel(self, name: str) -> Outcome:
        return await self._call("POST", f"/runs/{name}/cancel")

    async def steps(self, name: str) -> Outcome:
        return await self._call("GET", f"/runs/{name}/steps")

    async def events(self, name: str) -> Outcome:
        return await self._call("GET", f"/runs/{name}/events")


class Grpc:
    def __init__(self, channel: grpc.aio.Channel, token: str, tenant: str) -> None:
        self.stub = pb_grpc.RunServiceStub(channel)
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.tenant = tenant

    async def _call(self, method: str, request: Any) -> Outcome:
        try:
            call = getattr(self.stub, method)(request, metadata=self.metadata)
            if method == "WatchEvents":
                return ("ok", [json_format.MessageToDict(e.data) async for e in call])
            reply = await call
        except grpc.aio.AioRpcError as exc:
            status = rpc_status.from_call(exc)
            assert status is not None, exc
            info = error_details_pb2.ErrorInfo()
            [detail] = [d for d in status.details if d.Is(info.DESCRIPTOR)]
            detail.Unpack(info)
            assert info.domain == "agentos.io"
            assert exc.code().name == CATALOGUE[info.reason].grpc_code, info.reason
            return ("error", info.reason)
        if isinstance(reply, pb.ListRunsResponse):
            return ("ok", [_body(r) for r in reply.runs])
        if isinstance(reply, pb.ListStepsResponse):
            return ("ok", [json_format.MessageToDict(s) for s in reply.steps])
        return ("ok", _body(reply))

    async def create(self, agent_name: str, body: dict[str, Any], key: str) -> Outcome:
        request = pb.CreateRunRequest(
            tenant=self.tenant,
            agent=agent_name,
            timeout_seconds=body.get("timeoutSeconds", 0),
            labels=body.get("labels", {}),
            request_id=key,
        )
        if "input" in body:
            json_format.ParseDict(body["input"], request.input)
        return await self._call("Create", request)

    async def get(self, name: str, agent_name: str = "") -> Outcome:
        return await self._call(
            "Get", pb.GetRunRequest(tenant=self.tenant, name=name, agent=agent_name)
        )

    async def list(self, agent_name: str, phase: str) -> Outcome:
        request = pb.ListRunsRequest(
            tenant=self.tenant, agent=agent_name, phases=[phase] if phase else []
        )
        return await self._call("List", request)

    async def cancel(self, name: str) -> Outcome:
        return await self._call("Cancel", pb.CancelRunRequest(tenant=self.tenant, name=name))

    async def steps(self, name: str) -> Outcome:
        return await self._call("ListSteps", pb.ListStepsRequest(tenant=self.tenant, name=name))

    async def events(self, name: str) -> Outcome:
        request = pb.WatchRunEventsRequest(tenant=self.tenant, name=name)
        return await self._call("WatchEvents", request)


def _body(run: pb.Run) -> dict[str, Any]:
    md = run.metadata
    return {
        "apiVersion": run.api_version,
        "kind": run.kind,
        "metadata": {
            "name": md.name,
            "uid": md.uid,
            "tenant": md.tenant,
            "agent": md.agent,
            "labels": dict(md.labels),
            "creationTimestamp": md.creation_timestamp,
            "resourceVersion": md.resource_version,
        },
        "spec": json_format.MessageToDict(run.spec),
        "status": json_format.MessageToDict(run.status),
    }


async def scenario(api: Api, tenant: str, s: Rest | Grpc) -> list[Outcome]:
    body = {"input": {"q": [1, 2.5, "x", None]}, "labels": {"batch": "b1"}, "timeoutSeconds": 60}
    made = await s.create("worker", body, "key-1")
    name = made[1]["metadata"]["name"]
    await record_step(api, tenant, name, "call-1", input={"a": 1}, output=2)
    out = [made, await s.create("worker", body, "key-1")]  # replayed
    out.append(await s.create("worker", {"input": 2}, "key-1"))  # same key, other body
    out.append(await s.create("ghost", {"input": 1}, ""))
    out.append(await s.create("worker", {"timeoutSeconds": 0}, ""))
    out.append(await s.create("busy", {"input": 1}, ""))  # maxQueued 0
    out += [await s.get(name), await s.get(name, "worker"), await s.get(name, "other")]
    out.append(await s.get("run-000000000000"))
    out += [await s.list("worker", ""), await s.list("worker", "Canceled")]
    out.append(await s.list("worker", "Sleeping"))
    out.append(await s.steps(name))
    out += [await s.cancel(name), await s.cancel(name), await s.cancel("run-000000000000")]
    out += [await s.list("worker", "Canceled"), await s.events(name)]
    return [(kind, normal(value)) for kind, value in out]


async def test_rest_and_grpc_runs_give_the_same_objects_and_error_codes(
    pg_url: str, tmp_path: Path
) -> None:
    async with running_api(pg_url, tmp_path) as api:
        address = f"127.0.0.1:{free_port()}"
        server, health = build_server(api.container, address)
        await server.start()
        await mark_serving(health)
        try:
            root = await api.token("root", platform_admin=True)
            async with api.client(root) as admin:
                for tenant in ("via-rest", "via-grpc"):
                    for manifest in (agent("worker"), agent("busy", maxQueued=0)):
                        r = await admin.post(f"/api/v1/tenants/{tenant}/agents", json=manifest)
                        assert r.status_code == 201
            channel = grpc.aio.insecure_channel(address)
            rest_out = await scenario(api, "via-rest", Rest(api, root, "via-rest"))
            grpc_out = await scenario(api, "via-grpc", Grpc(channel, root, "via-grpc"))
            health_stub = health_pb2_grpc.HealthStub(channel)
            served = await health_stub.Check(
                health_pb2.HealthCheckRequest(service="agentos.v1.RunService")
            )
            await channel.close()
        finally:
            await server.stop(None)
    assert [kind for kind, _ in rest_out] == [
        "ok", "ok", "error", "error", "error", "error", "ok", "ok", "error", "error",
        "ok", "ok", "error", "ok", "ok", "error", "error", "ok", "ok",
    ]  # fmt: skip
    assert [v for k, v in rest_out if k == "error"] == [
        "IDEMPOTENCY_KEY_REUSED", "AGENT_NOT_FOUND", "VALIDATION_FAILED", "AGENT_BUSY",
        "RUN_NOT_FOUND", "RUN_NOT_FOUND", "BAD_REQUEST", "RUN_FINISHED", "RUN_NOT_FOUND",
    ]  # fmt: skip
    for i, (r, g) in enumerate(zip(rest_out, grpc_out, strict=True)):
        assert r == g, f"step {i} of the scenario differs"
    events = rest_out[-1][1]
    assert [e["type"] for e in events] == ["run.created", "run.step_recorded", "run.canceled"]
    assert served.status == health_pb2.HealthCheckResponse.SERVING
