"""Composition root: wires settings, the database, the schema registry and NATS together."""

from __future__ import annotations

import asyncio
import signal
from functools import lru_cache

from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.config import Settings
from controlplane.controllers.agents.reconciler import Controller, ControllerConfig
from controlplane.data.engine import create_engine
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.events.registry import SchemaRegistry, load_builtin_schemas
from controlplane.domain.scheduling.admission import Node
from controlplane.messaging.relay import RelayConfig
from controlplane.runtimes.base import Runtime
from controlplane.runtimes.capabilities import capabilities
from controlplane.runtimes.instrumented import instrument
from controlplane.runtimes.process import ProcessRuntime
from controlplane.runtimes.simulated import SimulatedRuntime


@lru_cache(maxsize=1)
def schema_registry() -> SchemaRegistry:
    """The registry of every event schema Agent OS ships."""
    return load_builtin_schemas()


class Container:
    """What a process needs, built once from `Settings`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: AsyncEngine = create_engine(settings.database_url)
        self.registry = schema_registry()
        self.controller: Controller | None = None
        self._runtimes: dict[str, Runtime] | None = None

    def notify(self, agent_id: str) -> None:
        """Tell the in-process controller (if any) that an agent changed."""
        if self.controller is not None:
            self.controller.notify(agent_id)

    def notify_capacity(self) -> None:
        """Quota or capacity changed: schedule again."""
        if self.controller is not None:
            self.controller.want_schedule()

    def runtimes(self) -> dict[str, Runtime]:
        """Runtime backends by runtime class, from AGENTOS_RUNTIME (DESIGN §5), each wrapped
        in InstrumentedRuntime (metrics and spans per operation). Built once."""
        if self._runtimes is None:
            self._runtimes = instrument(self._backends())
        return self._runtimes

    def _backends(self) -> dict[str, Runtime]:
        s = self.settings
        process = ProcessRuntime(s.state_dir / "process")
        if s.runtime == "simulated":
            sim = SimulatedRuntime(s.simulated_start_latency_s)
            return {"runc": sim, "gvisor": sim, "process": sim}
        if s.runtime == "kubernetes":
            from controlplane.runtimes.kubernetes.runtime import KubernetesRuntime

            kube = KubernetesRuntime.from_env(s.kubernetes_scheduler_name, s.instance)
            return {"runc": kube, "gvisor": kube, "process": kube}
        if s.runtime == "containerd":
            from controlplane.runtimes.containerd.runtime import ContainerdRuntime

            ctrd = ContainerdRuntime.from_env()
            return {"runc": ctrd, "gvisor": ctrd, "process": process}
        return {"process": process}

    def build_controller(self) -> Controller:
        s = self.settings
        runtimes = self.runtimes()
        # Kubernetes: the cluster's Nodes are the nodes; elsewhere this host is the one node.
        capacity = capabilities(runtimes["runc"]).node_capacity if "runc" in runtimes else None
        node_source = capacity.nodes if capacity is not None else None
        self.controller = Controller(
            self.engine,
            self.registry,
            runtimes,
            ControllerConfig(
                workers=s.controller_workers,
                require_published=bool(s.nats_url),
                nodes=[
                    Node(s.node_name, s.node_cpu_millis, s.node_memory_bytes, s.node_max_agents)
                ],
                restart_backoff_base_s=s.restart_backoff_base_s,
                node_source=node_source,
            ),
        )
        return self.controller

    def uow(self, principal: str = "system") -> UnitOfWork:
        """A new UnitOfWork on this process's engine."""
        return UnitOfWork(self.engine, self.registry, principal=principal)

    def relay_config(self) -> RelayConfig:
        s = self.settings
        return RelayConfig(
            batch_size=s.relay_batch_size,
            lease_s=s.relay_lease_s,
            poll_interval_s=s.relay_poll_interval_s,
            publish_timeout_s=s.relay_publish_timeout_s,
            max_attempts=s.relay_max_attempts,
            backoff_base_s=s.relay_backoff_base_s,
            backoff_max_s=s.relay_backoff_max_s,
        )

    async def close(self) -> None:
        await self.engine.dispose()


def stop_on_signals() -> asyncio.Event:
    """An event set on SIGTERM or SIGINT (graceful drain). Call inside the running loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
