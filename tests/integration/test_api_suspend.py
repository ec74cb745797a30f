"""Suspend and resume through REST and gRPC (adr/0019-suspend-resume.md), on the real
PostgreSQL with no controller: what each request writes, and the same answers on both APIs.
The agent is walked to Ready (and to Suspended) through the service layer, as the controller
would."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from controlplane.api.grpc.gen import agent_service_pb2 as pb
from controlplane.api.grpc.gen import agent_service_pb2_grpc as pb_grpc
from controlplane.api.grpc.server import build_server, mark_serving
from controlplane.domain.agents.lifecycle import Phase
from controlplane.service import agents as svc
from harness.ports import free_port
from tests.integration.api_harness import Api, manifest, running_api

pytestmark = pytest.mark.postgres


async def walk(api: Api, tenant: str, name: str, *phases: Phase) -> None:
    for phase in phases:
        async with api.container.uow() as uow:
            record = await uow.agents.get(tenant, name)
            await svc.transition(uow, record, phase, "Test", "walked by the test")
            await uow.commit()


async def test_suspend_marks_a_ready_agent_and_resume_moves_a_suspended_one_to_starting(
    pg_url: str, tmp_path: Path
) -> None:
    async with running_api(pg_url, tmp_path) as api:
        root = await api.token("root", platform_admin=True)
        base = "/api/v1/tenants/susp-rest/agents"
        async with api.client(root) as http:
            assert (await http.post(base, json=manifest("a1"))).status_code == 201
            early = await http.post(f"{base}/a1/suspend")
            assert early.status_code == 409 and early.json()["code"] == "CONFLICT"
            await walk(api, "susp-rest", "a1", Phase.SCHEDULED, Phase.STARTING, Phase.READY)

            asked = await http.post(f"{base}/a1/suspend")
            assert asked.status_code == 202, asked.text
            status = asked.json()["status"]
            assert status["phase"] == "Ready"
            assert status["suspension"]["state"] == "Suspending"
            again = await http.post(f"{base}/a1/suspend")
            assert (
                again.json()["metadata"]["resourceVersion"]
                == (asked.json()["metadata"]["resourceVersion"])
            ), "idempotent"
            assert (await http.post(f"{base}/a1/resume")).json()["status"]["phase"] == "Ready"

            await walk(api, "susp-rest", "a1", Phase.SUSPENDED)
            resumed = await http.post(f"{base}/a1/resume")
            assert resumed.status_code == 202
            assert resumed.json()["status"]["phase"] == "Starting"
            assert resumed.json()["status"]["suspension"]["state"] == "Resuming"
            missing = await http.post(f"{base}/nobody/resume")
            assert missing.status_code == 404


async def test_grpc_suspend_and_resume_answer_as_rest_does(pg_url: str, tmp_path: Path) -> None:
    async with running_api(pg_url, tmp_path) as api:
        address = f"127.0.0.1:{free_port()}"
        server, health = build_server(api.container, address)
        await server.start()
        await mark_serving(health)
        try:
            root = await api.token("root", platform_admin=True)
            async with api.client(root) as http:
                created = await http.post("/api/v1/tenants/susp-grpc/agents", json=manifest("g1"))
                assert created.status_code == 201
            md = (("authorization", f"Bearer {root}"),)
            async with grpc.aio.insecure_channel(address) as channel:
                stub = pb_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.Suspend(
                        pb.SuspendRequest(tenant="susp-grpc", name="g1"), metadata=md
                    )
                assert refused.value.code() is grpc.StatusCode.ABORTED
                await walk(api, "susp-grpc", "g1", Phase.SCHEDULED, Phase.STARTING, Phase.READY)
                agent = await stub.Suspend(
                    pb.SuspendRequest(tenant="susp-grpc", name="g1"), metadata=md
                )
                assert agent.status["suspension"]["state"] == "Suspending"
                await walk(api, "susp-grpc", "g1", Phase.SUSPENDED)
                agent = await stub.Resume(
                    pb.ResumeRequest(tenant="susp-grpc", name="g1"), metadata=md
                )
                assert agent.status["phase"] == "Starting"
        finally:
            await server.stop(grace=None)
