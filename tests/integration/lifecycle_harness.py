"""An in-process control plane for lifecycle tests: real PostgreSQL, real NATS (relay on),
the real controller, and a real runtime (child processes or containerd)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from nats.aio.client import Client as NATS
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.bootstrap import Container, schema_registry
from controlplane.config import Settings
from controlplane.controllers.agents.controller import Controller
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.records import AgentRecord
from controlplane.domain.scheduling.admission import Node
from controlplane.messaging.relay import RelayConfig
from controlplane.runtimes.base import Runtime
from controlplane.service import agents as svc
from tests.integration.outbox_helpers import eventually


class Plane:
    def __init__(self, engine: AsyncEngine, controller: Controller) -> None:
        self.engine = engine
        self.controller = controller

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.engine, schema_registry(), principal="test")

    async def apply(self, tenant: str, manifest: dict[str, Any]) -> AgentRecord:
        async with self.uow() as uow:
            result = await svc.apply_agent(uow, tenant, manifest)
        self.controller.notify(result.agent.id)
        return result.agent

    async def delete(self, tenant: str, name: str) -> None:
        async with self.uow() as uow:
            record = await svc.delete_agent(uow, tenant, name)
        self.controller.notify(record.id)

    async def find(self, tenant: str, name: str) -> AgentRecord | None:
        async with self.uow() as uow:
            return await uow.agents.find(tenant, name)

    async def wait_phase(
        self, tenant: str, name: str, phase: str, timeout_s: float = 60, **status: Any
    ) -> AgentRecord:
        async def check() -> AgentRecord | None:
            record = await self.find(tenant, name)
            if record is None or record.status.phase != phase:
                return None
            if any(getattr(record.status, k) != v for k, v in status.items()):
                return None
            return record

        return await eventually(check, timeout_s, f"{tenant}/{name} {phase} {status or ''}")

    async def wait_gone(self, tenant: str, name: str, timeout_s: float = 60) -> None:
        async def gone() -> bool:
            return await self.find(tenant, name) is None

        await eventually(gone, timeout_s, f"{tenant}/{name} deleted")

    async def history(self, record: AgentRecord) -> list[str]:
        async with self.uow() as uow:
            return [t["to_phase"] for t in await uow.agents.transitions(record.id)]


@contextlib.asynccontextmanager
async def control_plane(
    engine: AsyncEngine,
    url: str,
    nc: NATS | None,
    runtimes: dict[str, Runtime],
    *,
    node: Node | None = None,
) -> AsyncIterator[Plane]:
    """Run a relay (when `nc`) and a controller until the block ends."""
    stop = asyncio.Event()
    container = Container(Settings(database_url=url), engine=engine, runtimes=runtimes)
    config = dataclasses.replace(
        container.controller_config(),
        workers=4,
        change_poll_s=0.2,
        resync_s=5,
        restart_backoff_base_s=0.2,
        unschedulable_retry_s=0.5,
        require_published=nc is not None,
        nodes=[node or Node("local", 8000, 16 * 2**30)],
    )
    controller = container.build_controller(config)
    tasks = [asyncio.create_task(controller.run(stop))]
    if nc is not None:
        relay = container.build_relay(nc, RelayConfig(poll_interval_s=0.1, lease_s=5))
        tasks.append(asyncio.create_task(relay.run(stop)))
    try:
        yield Plane(engine, controller)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Sandboxes outlive their control plane by design; a test leaves none behind.
        for runtime in controller.distinct_runtimes():
            for sandbox_id in await runtime.list_sandboxes():
                await runtime.remove(sandbox_id)


def manifest(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "agentos.io/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": {"image": "local/none", **spec},
    }
