"""REST and gRPC give the same objects and the same error codes: one scenario, run through
both against one control plane on real PostgreSQL (gRPC over a real loopback socket)."""

from __future__ import annotations

import copy
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from controlplane.api.errors import CATALOGUE
from controlplane.api.grpc.gen import agent_service_pb2 as pb
from controlplane.api.grpc.gen import agent_service_pb2_grpc as pb_grpc
from controlplane.api.grpc.server import agent_message, build_server, manifest_of, mark_serving
from harness.ports import free_port
from tests.integration.api_harness import Api, running_api

pytestmark = pytest.mark.postgres

AGENT = {
    "apiVersion": "agentos.io/v1alpha1",
    "kind": "Agent",
    "metadata": {"name": "p1", "labels": {"team": "a"}},
    "spec": {
        "image": "local/none",
        "runtime": {"class": "process"},
        "command": ["sleep", "60"],
        "maxRestarts": 2,
        "readiness": {"heartbeat": {}, "periodSeconds": 0.5},
        "config": {"nested": {"list": [1, "two", None]}},
    },
}

Outcome = tuple[str, Any]


def normal(body: dict[str, Any]) -> dict[str, Any]:
    """An object without what differs by nature between two creations (ids, times, tenant)."""
    body = copy.deepcopy(body)
    for key in ("uid", "creationTimestamp", "deletionTimestamp", "namespace"):
        body["metadata"].pop(key, None)
    body["status"].pop("history", None)
    return body


class Rest:
    def __init__(self, api: Api, token: str) -> None:
        self.client = api.client(token)

    async def call(self, method: str, url: str, **kw: Any) -> Outcome:
        r = await self.client.request(method, url, **kw)
        if r.status_code >= 400:
            assert r.headers["content-type"] == "application/problem+json"
            return ("error", r.json()["code"])
        body = r.json()
        if body.get("kind") == "AgentList":
            return ("ok", [normal(item) for item in body["items"]])
        return ("ok", normal(body))


class Grpc:
    def __init__(self, channel: grpc.aio.Channel, token: str) -> None:
        self.stub = pb_grpc.AgentServiceStub(channel)
        self.metadata = (("authorization", f"Bearer {token}"),)

    async def call(self, method: str, request: Any) -> Outcome:
        try:
            reply = await getattr(self.stub, method)(request, metadata=self.metadata)
        except grpc.aio.AioRpcError as exc:
            status = rpc_status.from_call(exc)
            assert status is not None, exc
            infos = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
            info = error_details_pb2.ErrorInfo()
            infos[0].Unpack(info)
            assert info.domain == "agentos.io"
            assert exc.code().name == CATALOGUE[info.reason].grpc_code, info.reason
            return ("error", info.reason)
        if isinstance(reply, pb.ListResponse):
            return ("ok", [normal(_body(a)) for a in reply.agents])
        return ("ok", normal(_body(reply)))


def _body(agent: pb.Agent) -> dict[str, Any]:
    from google.protobuf import json_format

    md = agent.metadata
    return {
        "apiVersion": agent.api_version,
        "kind": agent.kind,
        "metadata": {
            "name": md.name,
            "namespace": md.namespace,
            "uid": md.uid,
            "labels": dict(md.labels),
            "annotations": dict(md.annotations),
            "generation": md.generation,
            "resourceVersion": md.resource_version,
            "creationTimestamp": md.creation_timestamp,
            **({"deletionTimestamp": md.deletion_timestamp} if md.deletion_timestamp else {}),
        },
        "spec": json_format.MessageToDict(agent.spec),
        "status": json_format.MessageToDict(agent.status),
    }


def with_spec(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(AGENT)
    body["spec"].update(changes)
    return body


async def scenario(
    create: Callable[[dict[str, Any], str | None], Awaitable[Outcome]],
    get: Callable[[str], Awaitable[Outcome]],
    list_: Callable[[str], Awaitable[Outcome]],
    update: Callable[[dict[str, Any]], Awaitable[Outcome]],
    delete: Callable[[str, str], Awaitable[Outcome]],
) -> list[Outcome]:
    out = [await create(AGENT, "key-1")]
    out.append(await create(AGENT, "key-1"))  # replay
    out.append(await create(with_spec(priority=1), "key-1"))  # same key, other body
    out.append(await create(AGENT, None))  # the name is taken
    out.append(await create(with_spec(image=""), None))  # invalid
    out.append(await get("p1"))
    out.append(await get("missing"))
    out.append(await list_("team=a"))
    out.append(await list_("team in (b)"))
    out.append(await list_("team=="))  # team equal to the empty value: matches nothing
    out.append(await list_("=oops"))  # malformed selector
    stale = with_spec(priority=5)
    stale["metadata"]["resourceVersion"] = "0"
    out.append(await update(stale))
    fresh = with_spec(priority=5)
    fresh["metadata"]["resourceVersion"] = "1"
    out.append(await update(fresh))
    out.append(await delete("p1", "1"))  # stale: it is at 2 now
    out.append(await delete("p1", ""))
    out.append(await delete("missing", ""))
    return out


async def test_rest_and_grpc_give_the_same_objects_and_error_codes(
    pg_url: str, tmp_path: Path
) -> None:
    async with running_api(pg_url, tmp_path) as api:
        address = f"127.0.0.1:{free_port()}"
        server, health = build_server(api.container, address)
        await server.start()
        await mark_serving(health)
        try:
            root = await api.token("root", platform_admin=True)
            rest = Rest(api, root)
            base = "/api/v1/tenants/via-rest/agents"
            channel = grpc.aio.insecure_channel(address)
            g = Grpc(channel, root)

            async def r_create(body: dict[str, Any], key: str | None) -> Outcome:
                headers = {"Idempotency-Key": key} if key else {}
                return await rest.call("POST", base, json=body, headers=headers)

            async def g_create(body: dict[str, Any], key: str | None) -> Outcome:
                request = pb.CreateRequest(
                    tenant="via-grpc", agent=_request_agent(body), request_id=key or ""
                )
                return await g.call("Create", request)

            rest_out = await scenario(
                r_create,
                lambda name: rest.call("GET", f"{base}/{name}"),
                lambda sel: rest.call("GET", base, params={"labelSelector": sel}),
                lambda body: rest.call("PUT", f"{base}/{body['metadata']['name']}", json=body),
                lambda name, rv: rest.call(
                    "DELETE", f"{base}/{name}", headers={"If-Match": rv} if rv else {}
                ),
            )
            grpc_out = await scenario(
                g_create,
                lambda name: g.call("Get", pb.GetRequest(tenant="via-grpc", name=name)),
                lambda sel: g.call("List", pb.ListRequest(tenant="via-grpc", label_selector=sel)),
                lambda body: g.call(
                    "Update", pb.UpdateRequest(tenant="via-grpc", agent=_request_agent(body))
                ),
                lambda name, rv: g.call(
                    "Delete", pb.DeleteRequest(tenant="via-grpc", name=name, etag=rv)
                ),
            )
            assert [kind for kind, _ in rest_out] == [
                "ok", "ok", "error", "error", "error", "ok", "error", "ok", "ok", "ok",
                "error", "error", "ok", "error", "ok", "error",
            ]  # fmt: skip
            assert grpc_out == rest_out

            # and the watch streams tell the same story, from the beginning of the feed
            streamed = await rest.client.get(
                base, params={"watch": "true", "resourceVersion": "0", "timeoutSeconds": "1"}
            )
            rest_events = [json.loads(line) for line in streamed.text.splitlines()]
            grpc_events = [
                event
                async for event in g.stub.Watch(
                    pb.WatchRequest(tenant="via-grpc", resource_version="0", timeout_seconds=1),
                    metadata=g.metadata,
                )
            ]
            assert [
                (e["type"], e["event"]["event_type"], e["object"]["metadata"]["name"])
                for e in rest_events
                if e["event"]
            ] == [
                (e.type, e.event.event_type, e.object.metadata.name)
                for e in grpc_events
                if e.event.event_id
            ]
            assert [e.event.event_type for e in grpc_events] == [
                "agent.created",
                "agent.phase_changed",
                "agent.updated",
                "agent.phase_changed",  # Terminating
            ]

            # authentication and tenancy answer alike too
            viewer = await api.token("v", tenant="via-grpc", role="viewer")
            no_role = Grpc(channel, viewer)
            denied = await no_role.call(
                "Create", pb.CreateRequest(tenant="via-grpc", agent=_request_agent(AGENT))
            )
            hidden = await no_role.call("Get", pb.GetRequest(tenant="via-rest", name="p1"))
            anonymous = await Grpc(channel, "nope").call(
                "Get", pb.GetRequest(tenant="via-grpc", name="p1")
            )
            assert (denied, hidden, anonymous) == (
                ("error", "PERMISSION_DENIED"),
                ("error", "TENANT_NOT_FOUND"),
                ("error", "UNAUTHENTICATED"),
            )
            rest_viewer = Rest(api, viewer)
            assert await rest_viewer.call(
                "POST", "/api/v1/tenants/via-grpc/agents", json=AGENT
            ) == ("error", "PERMISSION_DENIED")
            assert await rest_viewer.call("GET", f"{base}/p1") == ("error", "TENANT_NOT_FOUND")

            # health checking and reflection are served
            health_stub = health_pb2_grpc.HealthStub(channel)
            answer = await health_stub.Check(
                health_pb2.HealthCheckRequest(service="agentos.v1.AgentService")
            )
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
            reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
            services = []
            async for reply in reflect.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            ):
                services += [s.name for s in reply.list_services_response.service]
            assert "agentos.v1.AgentService" in services
            await channel.close()
            await rest.client.aclose()
            await rest_viewer.client.aclose()
        finally:
            await server.stop(grace=None)


def _request_agent(body: dict[str, Any]) -> pb.Agent:
    return agent_message({"status": {}, **body})


def test_agent_message_round_trips_the_manifest() -> None:
    assert manifest_of(agent_message({"status": {}, **AGENT})) == {
        **AGENT,
        "metadata": {**AGENT["metadata"], "annotations": {}},
    }
