"""The composition root: builds what a process needs from `Settings` — the database engine,
the schema registry, the runtimes, the controller and the relay — in one typed place.

Every process (controlplane/entrypoints/), the operator, the tests' harnesses and the
benchmarks build their parts here, so the wiring is written once (adr/0012-layout.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from fastapi import FastAPI
from nats.aio.client import Client as NATS
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.config import Settings
from controlplane.controllers.agents.controller import Controller, ControllerConfig
from controlplane.controllers.runs.reconciler import RunController, RunControllerConfig
from controlplane.data.engine import create_engine
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.events.registry import SchemaRegistry, load_builtin_schemas
from controlplane.domain.scheduling.admission import Node
from controlplane.gateway.app import Gateway, create_gateway_app
from controlplane.gateway.auth import CredentialCache
from controlplane.gateway.egress_proxy import EgressProxy, ProxyLimits, parse_resolve
from controlplane.messaging.relay import Relay, RelayConfig
from controlplane.messaging.run_queues import RunQueues
from controlplane.runtimes.base import Runtime
from controlplane.runtimes.capabilities import capabilities
from controlplane.runtimes.instrumented import instrument
from controlplane.runtimes.process import ProcessRuntime
from controlplane.runtimes.simulated import SimulatedRuntime

if TYPE_CHECKING:
    from controlplane.api.context import ApiContext


@lru_cache(maxsize=1)
def schema_registry() -> SchemaRegistry:
    """The registry of every event schema Agent OS ships."""
    return load_builtin_schemas()


class Container:
    """What a process needs, built once from `settings`.

    `engine` and `runtimes` may be given (a harness or a benchmark that owns them); otherwise
    they are built from the settings: the engine from AGENTOS_DATABASE_URL, the runtimes from
    AGENTOS_RUNTIME (see `runtimes`).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        engine: AsyncEngine | None = None,
        runtimes: Mapping[str, Runtime] | None = None,
    ) -> None:
        self.settings = settings
        self._owns_engine = engine is None
        self.engine: AsyncEngine = engine or create_engine(
            settings.database_url, pool_size=settings.db_pool_size
        )
        self.registry: SchemaRegistry = schema_registry()
        self.controller: Controller | None = None
        # The API's per-process context (token cache, rate limiter), made on first use by
        # controlplane.api.context.ApiContext.of and shared by REST and gRPC.
        self.api: ApiContext | None = None
        self._runtimes: dict[str, Runtime] | None = dict(runtimes) if runtimes else None

    def notify(self, agent_id: str) -> None:
        """Tell the in-process controller (if any) that an agent changed."""
        if self.controller is not None:
            self.controller.notify(agent_id)

    def notify_capacity(self) -> None:
        """Quota or capacity changed: schedule again."""
        if self.controller is not None:
            self.controller.want_schedule()

    def runtimes(self) -> dict[str, Runtime]:
        """Runtime backends by runtime class, from AGENTOS_RUNTIME (architecture/overview.md,
        Runtimes), each wrapped in InstrumentedRuntime (metrics and spans per operation).
        Built once."""
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

    def controller_config(self) -> ControllerConfig:
        """The controller's settings as `serve` runs it; a harness changes fields with
        `dataclasses.replace`."""
        s = self.settings
        runtimes = self.runtimes()
        # Kubernetes: the cluster's Nodes are the nodes; elsewhere this host is the one node.
        capacity = capabilities(runtimes["runc"]).node_capacity if "runc" in runtimes else None
        node_source = capacity.nodes if capacity is not None else None
        return ControllerConfig(
            workers=s.controller_workers,
            require_published=bool(s.nats_url),
            nodes=[Node(s.node_name, s.node_cpu_millis, s.node_memory_bytes, s.node_max_agents)],
            restart_backoff_base_s=s.restart_backoff_base_s,
            node_source=node_source,
            gateway_url=self.gateway_url(),
            egress_proxy_url=self.egress_proxy_url(),
            warm_pools=list(s.warm_pools),
        )

    def plane_id(self) -> str:
        """This installation's mark on what it shares with others (its run consumers on a
        shared NATS): the instance name and a hash of its database's address (no secret)."""
        url = make_url(self.settings.database_url).set(password=None)
        digest = hashlib.sha256(url.render_as_string(hide_password=True).encode()).hexdigest()
        return f"{self.settings.instance}/{digest[:12]}"

    def gateway_url(self) -> str:
        """The agent gateway as sandboxes reach it (AGENTOS_GATEWAY_URL)."""
        s = self.settings
        return s.gateway_url or f"http://127.0.0.1:{s.gateway_port}"

    def egress_proxy_url(self) -> str | None:
        """The egress proxy as sandboxes reach it: AGENTOS_EGRESS_PROXY_URL, else the gateway
        URL's host on AGENTOS_EGRESS_PROXY_PORT; None when the port is 0 (no proxy)."""
        s = self.settings
        if s.egress_proxy_url or not s.egress_proxy_port:
            return s.egress_proxy_url
        host = urlsplit(self.gateway_url()).hostname or "127.0.0.1"
        return f"http://{f'[{host}]' if ':' in host else host}:{s.egress_proxy_port}"

    def build_egress_proxy(self) -> EgressProxy:
        """The egress proxy (component gateway), with its own credential cache."""
        s = self.settings
        limits = ProxyLimits(
            connect_timeout_s=s.egress_connect_timeout_s,
            idle_timeout_s=s.egress_idle_timeout_s,
            max_connections=s.egress_max_connections,
        )
        credentials = CredentialCache(self.uow)
        return EgressProxy(
            credentials.authenticate, resolve=parse_resolve(s.egress_resolve), limits=limits
        )

    def run_queues(self, nc: NATS) -> RunQueues:
        """The per-agent run queues on `nc` (architecture/runs.md)."""
        return RunQueues(nc, ack_wait_s=self.settings.run_ack_wait_s, owner=self.plane_id())

    def build_run_controller(
        self, queues: RunQueues, config: RunControllerConfig | None = None
    ) -> RunController:
        """The run controller: dispatch, timeouts, lost deliveries, consumers."""
        config = config or RunControllerConfig(stale_after_s=self.settings.run_ack_wait_s)
        return RunController(self.uow, queues, config)

    def build_gateway(self, queues: RunQueues) -> FastAPI:
        """The agent gateway's ASGI application."""
        return create_gateway_app(Gateway(self.uow, queues))

    def build_controller(self, config: ControllerConfig | None = None) -> Controller:
        """The agent controller on this container's engine and runtimes (`config` defaults
        to `controller_config()`); kept as `self.controller` for `notify`."""
        self.controller = Controller(
            self.engine, self.registry, self.runtimes(), config or self.controller_config()
        )
        return self.controller

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

    def build_relay(
        self, nc: NATS, config: RelayConfig | None = None, *, owner: str | None = None
    ) -> Relay:
        """An outbox relay publishing through `nc` (`config` defaults to `relay_config()`)."""
        return Relay(
            self.engine, self.settings.database_url, nc, config or self.relay_config(), owner=owner
        )

    def uow(self, principal: str = "system") -> UnitOfWork:
        """A new UnitOfWork on this process's engine."""
        return UnitOfWork(self.engine, self.registry, principal=principal)

    async def close(self) -> None:
        """Dispose of the engine when this container made it."""
        if self._owns_engine:
            await self.engine.dispose()


def stop_on_signals() -> asyncio.Event:
    """An event set on SIGTERM or SIGINT (graceful drain). Call inside the running loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
