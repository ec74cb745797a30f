"""Warm pools on real containerd (runc and gVisor) and PostgreSQL: agents claim started
sandboxes and are bound to their identity at the claim (architecture/warm-pools.md).

The python agent image is built from this tree (its SDK has the bootstrap) into a containerd
namespace of its own. The agents serve runs from a recording fake gateway on the host's
bridge address; each credential they use is then checked against the real database.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.bootstrap import Container
from controlplane.config import Settings
from controlplane.controllers.agents.leak_sweep import remove_leaked_sandboxes
from controlplane.controllers.agents.warm_pools import WarmPools
from controlplane.data.repositories.agent_reads import AgentReads
from controlplane.domain.agents.warm_pools import WarmPool, sandbox_pool_key
from controlplane.domain.errors import RunNotFound
from controlplane.domain.scheduling.admission import Node
from controlplane.runtimes.containerd.runtime import ContainerdRuntime
from controlplane.service import run_execution
from controlplane.service import runs as run_svc
from harness.containerd_namespace import private_namespace
from harness.ports import free_port
from harness.waiting import eventually
from tests.conftest import SERVICES_ENV, service_setting
from tests.integration.lifecycle_harness import Plane, manifest
from tests.unit.sdk.fake_gateway import FakeGateway, _problem

pytestmark = [pytest.mark.containerd, pytest.mark.postgres]

COMMAND = ["python3", "/agent/whoami_agent.py"]
LIMITS = {"cpu": "500m", "memory": "128Mi"}
SIZE = 5
DEADLINE_S = 90.0


class RecordingGateway(FakeGateway):
    """The fake gateway, taking any sandbox credential and recording which one reported
    each run's result."""

    def __init__(self) -> None:
        super().__init__()
        self.reported_by: dict[str, str] = {}

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not token.startswith(run_execution.CREDENTIAL_PREFIX):
            return _problem(401, "UNAUTHENTICATED", "no valid agent credential")
        if request.path.endswith("/result"):
            self.reported_by[request.match_info["run"]] = token
        response: web.StreamResponse = await handler(request)
        return response


@pytest.fixture(scope="module")
async def namespace(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[str, str]]:
    address = service_setting("CONTAINERD_ADDRESS", "containerd")
    snapshotter = SERVICES_ENV.get("CONTAINERD_SNAPSHOTTER") or "overlayfs"
    async with private_namespace(address, snapshotter, tmp_path_factory.mktemp("img")) as found:
        yield found


@pytest.fixture
async def runtime(namespace: tuple[str, str], tmp_path: Path) -> AsyncIterator[ContainerdRuntime]:
    env = {**SERVICES_ENV, **os.environ, "CONTAINERD_NAMESPACE": namespace[0]}
    gateway_port = str(free_port())
    env |= {"AGENTOS_SANDBOX_DIR": str(tmp_path / "sb"), "AGENTOS_GATEWAY_PORT": gateway_port}
    rt = ContainerdRuntime.from_env(env)
    yield rt
    for sandbox_id in await rt.list_sandboxes():
        await rt.remove(sandbox_id)
    await rt.close()


@pytest.fixture
async def gateway(runtime: ContainerdRuntime) -> AsyncIterator[RecordingGateway]:
    assert runtime.network is not None, "sandboxes reach the gateway over the bridge"
    fake = RecordingGateway()
    port = runtime.network.settings.ports[0]
    await fake.start(runtime.network.settings.host_address, port)
    yield fake
    await fake.stop()


@dataclasses.dataclass
class WarmPlane:
    plane: Plane
    container: Container
    pool: WarmPool
    image: str
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def stop_controller(self) -> None:
        self.stop.set()
        await self.task


@pytest.fixture(params=["runc", "gvisor"])
async def warm(
    request: pytest.FixtureRequest,
    pg_engine: AsyncEngine,
    pg_url: str,
    runtime: ContainerdRuntime,
    gateway: RecordingGateway,
    namespace: tuple[str, str],
) -> AsyncIterator[WarmPlane]:
    runtime_class: str = request.param
    pool = WarmPool.model_validate(
        {"runtimeClass": runtime_class, "image": namespace[1], "command": COMMAND}
        | {"size": SIZE, "resources": LIMITS}
    )
    container = Container(
        Settings(database_url=pg_url), engine=pg_engine, runtimes={runtime_class: runtime}
    )
    config = dataclasses.replace(
        container.controller_config(),
        workers=8,
        change_poll_s=0.2,
        resync_s=2,
        require_published=False,
        nodes=[Node("local", 16000, 32 * 2**30)],
        gateway_url=gateway.url,
        egress_proxy_url=None,
        warm_pools=[pool],
    )
    controller = container.build_controller(config)
    stop = asyncio.Event()
    task = asyncio.create_task(controller.run(stop))
    try:
        yield WarmPlane(Plane(pg_engine, controller), container, pool, namespace[1], stop, task)
    finally:
        stop.set()
        await task


def whoami(plane: WarmPlane, name: str, **spec: Any) -> dict[str, Any]:
    return manifest(
        name,
        image=plane.image,
        runtime={"class": plane.pool.runtimeClass},
        command=COMMAND,
        config={"who": name},
        env=[{"name": "AGENT_LABEL", "value": f"label-{name}"}],
        resources={"limits": LIMITS},
        readiness={"heartbeat": {}, "periodSeconds": 1},
        **spec,
    )


async def full_pool(plane: WarmPlane) -> list[str]:
    async def ready() -> list[str] | None:
        found = plane.plane.controller.pools.ready(plane.pool)
        return found if len(found) == SIZE else None

    found: list[str] = await eventually(ready, DEADLINE_S, f"{SIZE} warm sandboxes")
    return found


async def test_agents_claim_warm_sandboxes_and_each_is_bound_to_its_own_identity(
    warm: WarmPlane, runtime: ContainerdRuntime, gateway: RecordingGateway
) -> None:
    plane, pools = warm.plane, warm.plane.controller.pools
    warm_ids = set(await full_pool(warm))
    created_before = pools.created
    names = [f"who-{i}" for i in range(SIZE)]
    await asyncio.gather(*(plane.apply("acme", whoami(warm, n)) for n in names))
    agents = [await plane.wait_phase("acme", n, "Ready", DEADLINE_S) for n in names]

    # Each agent runs in a sandbox of the pool, one each; none was created for it.
    claimed = {a.status.sandboxID for a in agents}
    assert claimed == warm_ids
    for agent in agents:
        async with plane.uow() as uow:
            reasons = [t["reason"] for t in await uow.agents.transitions(agent.id)]
        assert "WarmSandboxClaimed" in reasons and "SandboxCreating" not in reasons
    # The pool refills in the background with new sandboxes; nothing else exists.
    refilled = set(await full_pool(warm))
    assert not refilled & warm_ids
    assert pools.created - created_before == SIZE
    listed = set(await runtime.list_sandboxes())
    assert listed == warm_ids | refilled
    assert all(sandbox_pool_key(s) == warm.pool.key() for s in listed)

    # Each agent serves with its own config, environment and credential.
    async def all_polling() -> bool | None:
        return len(gateway.polling) == SIZE or None

    await eventually(all_polling, DEADLINE_S, f"{SIZE} agents long-polling")
    runs = [gateway.submit({"n": i}) for i in range(SIZE)]  # each poll takes one
    for run in runs:
        await gateway.wait_done(run.name, DEADLINE_S)
    outputs = {run.name: run.result["output"] for run in runs if run.result}
    assert sorted(o["who"] for o in outputs.values()) == names
    for output in outputs.values():
        assert output["label"] == f"label-{output['who']}"
        assert output["warm"] is True and output["warmVariables"] == []
    tokens = {gateway.reported_by[name] for name in outputs}
    assert len(tokens) == SIZE
    by_name = {a.name: a for a in agents}
    for run_name, output in outputs.items():
        async with plane.uow() as uow:
            who = await run_execution.authenticate_agent(uow, gateway.reported_by[run_name])
        assert who.agent == output["who"]
        assert who.sandbox_id == by_name[output["who"]].status.sandboxID

    # One agent's credential cannot act on another's run.
    async with warm.plane.uow() as uow:
        other = await run_svc.create_run(uow, "acme", names[1], {"input": {}})
    first_run = next(name for name, output in outputs.items() if output["who"] == names[0])
    async with plane.uow() as uow:
        first = await run_execution.authenticate_agent(uow, gateway.reported_by[first_run])
    with pytest.raises(RunNotFound):
        async with plane.uow() as uow:
            await run_execution.heartbeat(uow, first, other.body["metadata"]["name"])


@pytest.mark.parametrize("warm", ["runc"], indirect=True)
async def test_a_claim_recorded_but_not_handed_off_is_handed_off_by_the_next_reconcile(
    warm: WarmPlane, gateway: RecordingGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    await full_pool(warm)
    pools = warm.plane.controller.pools
    real = pools.hand_off
    skipped: list[str] = []

    async def crash_first(runtime: Any, sandbox_id: str, spec: Any) -> bool:
        if not skipped:  # as a controller stopped between the claim and its handoff
            skipped.append(sandbox_id)
            return False
        return await real(runtime, sandbox_id, spec)

    monkeypatch.setattr(pools, "hand_off", crash_first)
    await warm.plane.apply("acme", whoami(warm, "late"))
    ready = await warm.plane.wait_phase("acme", "late", "Ready", DEADLINE_S)
    assert [ready.status.sandboxID] == skipped
    run = gateway.submit({})
    await gateway.wait_done(run.name, DEADLINE_S)
    assert run.result is not None and run.result["output"]["who"] == "late"


async def test_an_agent_that_matches_no_pool_gets_a_sandbox_created_for_it(
    warm: WarmPlane, runtime: ContainerdRuntime
) -> None:
    warm_ids = set(await full_pool(warm))
    agent = await warm.plane.apply("acme", whoami(warm, "cold", args=["--cold"]))
    ready = await warm.plane.wait_phase("acme", "cold", "Ready", DEADLINE_S)
    assert ready.status.sandboxID is not None
    assert sandbox_pool_key(ready.status.sandboxID) is None
    async with warm.plane.uow() as uow:
        reasons = [t["reason"] for t in await uow.agents.transitions(agent.id)]
    assert "SandboxCreating" in reasons and "WarmSandboxClaimed" not in reasons
    assert set(warm.plane.controller.pools.ready(warm.pool)) == warm_ids
    assert set(await runtime.list_sandboxes()) == warm_ids | {ready.status.sandboxID}


async def test_the_leak_sweep_keeps_the_pool_and_removes_a_pool_no_longer_configured(
    warm: WarmPlane, runtime: ContainerdRuntime
) -> None:
    warm_ids = set(await full_pool(warm))
    assert await warm.plane.controller.remove_leaked_sandboxes() == 0
    assert set(await runtime.list_sandboxes()) == warm_ids
    # A controller configured without this pool removes its sandboxes.
    await warm.stop_controller()
    reads = AgentReads(warm.plane.engine)
    unconfigured = WarmPools([], {}, reads.sandbox_ids)
    assert await remove_leaked_sandboxes(reads, [runtime], unconfigured.keep) == SIZE
    assert await runtime.list_sandboxes() == {}
