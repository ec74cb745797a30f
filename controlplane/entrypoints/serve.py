"""`agentos serve`: the API (REST and gRPC), the controller and the relay in one process on
embedded defaults; AGENTOS_COMPONENTS picks a subset (architecture/overview.md, Processes)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import Iterator

import grpc
import uvicorn
from nats.aio.client import Client as NATS

from controlplane.bootstrap import Container, stop_on_signals
from controlplane.config import Settings, component_set, gateway_hosts
from controlplane.data import migrate
from controlplane.data.repositories.agents import phase_counter
from controlplane.data.repositories.run_deliveries import run_phase_counter
from controlplane.entrypoints import api_workers
from controlplane.gateway.egress_proxy import EgressProxy
from controlplane.messaging.embedded import EmbeddedNats
from controlplane.messaging.streams import connect
from controlplane.observability.inventory import run_inventory
from controlplane.observability.logging import configure_logging
from controlplane.observability.tracing import configure_tracing
from controlplane.service.idempotency import purge_periodically
from controlplane.service.tokens import needs_first_admin

# Linux's IP_FREEBIND (and IPV6_FREEBIND): bind an address before its interface has it (the
# sandbox bridge may come up after the gateway).
_FREEBIND = {socket.AF_INET: (socket.SOL_IP, 15), socket.AF_INET6: (socket.IPPROTO_IPV6, 78)}


def bind_sockets(hosts: list[str], port: int, *, reuse_port: bool = False) -> list[socket.socket]:
    """One bound TCP socket per address of `hosts` on `port` (SO_REUSEADDR, free bind on
    Linux; SO_REUSEPORT with `reuse_port`, for worker processes sharing the port); the
    servers listen on them. Raises OSError when an address cannot be bound."""
    sockets: list[socket.socket] = []
    for host in hosts:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if sys.platform == "linux" and family in _FREEBIND:
            sock.setsockopt(*_FREEBIND[family], 1)
        try:
            sock.bind(address)
        except OSError:
            sock.close()
            for bound in sockets:
                bound.close()
            raise
        sockets.append(sock)
    return sockets


class _ServerWithoutSignals(uvicorn.Server):
    """uvicorn, leaving SIGTERM/SIGINT to our own handler so the relay drains too."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def main(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Migrate the database, then run the components of `settings` until SIGTERM or SIGINT.

    With AGENTOS_NATS_URL unset, an embedded nats-server is started first (and stopped on
    the way out), so the relay always runs unless AGENTOS_EMBEDDED_NATS=false.
    `/metrics` shows every metric of the process; traces go to OTEL_EXPORTER_OTLP_ENDPOINT
    when it is set.
    """
    configure_logging(settings.log_level, settings.log_format)
    configure_tracing("agentos")
    if not api_workers.is_child():  # the first worker migrated before it started this one
        migrate.upgrade(settings.database_url)
    asyncio.run(_serve(settings, host or settings.host, port or settings.port))


async def _serve(settings: Settings, host: str, port: int) -> None:
    embedded: EmbeddedNats | None = None
    # Embedded only where the relay runs too: without it no run would reach its queue.
    if not settings.nats_url and settings.embedded_nats and "relay" in component_set(settings):
        embedded = EmbeddedNats(settings.state_dir)
        settings = settings.model_copy(update={"nats_url": await embedded.start()})
    try:
        await _run_components(settings, host, port)
    finally:
        if embedded is not None:
            await embedded.stop()


async def _run_components(settings: Settings, host: str, port: int) -> None:
    container = Container(settings)
    stop = stop_on_signals()
    components = component_set(settings)
    tasks: list[asyncio.Task[None]] = []
    # The inventory gauges are read from the database: one process of the plane reads them.
    if not api_workers.is_child():
        inventory = run_inventory(
            phase_counter(container.engine),
            stop,
            count_runs_by_phase=run_phase_counter(container.engine),
        )
        tasks.append(asyncio.create_task(inventory))
    controller = None
    if "controller" in components:
        controller = container.build_controller()
        tasks.append(asyncio.create_task(controller.run(stop)))
    server: uvicorn.Server | None = None
    grpc_server: grpc.aio.Server | None = None
    if "api" not in components:
        # No API: /metrics (and a 200 on any path, for probes) on the same address.
        from prometheus_client import start_http_server

        start_http_server(port, addr=host)
    else:
        server, grpc_server = await _start_api(container, host, port, stop, tasks)
    if "relay" in components:
        if settings.nats_url:
            from controlplane.entrypoints.relay import run_relay

            tasks.append(asyncio.create_task(run_relay(container, stop)))
        else:
            print(
                "AGENTOS_NATS_URL not set and AGENTOS_EMBEDDED_NATS=false: events stay in the "
                "outbox (no relay)",
                file=sys.stderr,
            )
    nc, gateway = await _start_runs(container, components, stop, tasks)
    proxy = await _start_egress_proxy(container, components)
    await stop.wait()
    if proxy is not None:
        await proxy.close()
    for running in (server, gateway):
        if running is not None:
            running.should_exit = True
    if grpc_server is not None:
        await grpc_server.stop(grace=5)
    await asyncio.gather(*tasks, return_exceptions=True)
    if nc is not None:
        await nc.drain()
    if controller is not None:
        for runtime in controller.distinct_runtimes():
            await runtime.close()
    await container.close()


async def _start_runs(
    container: Container, components: set[str], stop: asyncio.Event, tasks: list[asyncio.Task[None]]
) -> tuple[NATS | None, uvicorn.Server | None]:
    """The run queues' NATS connection, the run controller (with the controller) and the
    agent gateway's server on each AGENTOS_GATEWAY_HOST address at AGENTOS_GATEWAY_PORT (with
    the gateway); (None, None) when neither runs or there is no NATS."""
    settings = container.settings
    if not components & {"controller", "gateway"} or not settings.nats_url:
        return None, None
    nc = await connect(settings.nats_url, name="agentos-runs")
    queues = container.run_queues(nc)
    await queues.setup()
    if "controller" in components:
        tasks.append(asyncio.create_task(container.build_run_controller(queues).run(stop)))
    gateway = None
    if "gateway" in components:
        gateway = _ServerWithoutSignals(
            uvicorn.Config(
                container.build_gateway(queues),
                log_config=None,
                access_log=False,
                # Long polls of runs:next would hold a graceful stop for their whole wait.
                timeout_graceful_shutdown=2,
            )
        )
        sockets = bind_sockets(gateway_hosts(settings), settings.gateway_port)
        tasks.append(asyncio.create_task(gateway.serve(sockets=sockets)))
    return nc, gateway


async def _start_egress_proxy(container: Container, components: set[str]) -> EgressProxy | None:
    """The egress proxy on each AGENTOS_GATEWAY_HOST address at AGENTOS_EGRESS_PROXY_PORT,
    wherever the gateway's server runs (component gateway, with NATS); none when that port
    is 0."""
    settings = container.settings
    if "gateway" not in components or not settings.nats_url or not settings.egress_proxy_port:
        return None
    proxy = container.build_egress_proxy()
    await proxy.start(bind_sockets(gateway_hosts(settings), settings.egress_proxy_port))
    return proxy


async def _start_api(
    container: Container,
    host: str,
    port: int,
    stop: asyncio.Event,
    tasks: list[asyncio.Task[None]],
) -> tuple[uvicorn.Server, grpc.aio.Server | None]:
    """Start REST (uvicorn) and, on AGENTOS_GRPC_PORT, gRPC; returns both servers."""
    from controlplane.api.app import create_app
    from controlplane.api.grpc.server import build_server, mark_serving

    settings = container.settings
    child = api_workers.is_child()
    server = _ServerWithoutSignals(
        uvicorn.Config(create_app(container), log_config=None, access_log=False)
    )
    shared = child or settings.api_workers > 1
    sockets = bind_sockets([host], port, reuse_port=shared)
    tasks.append(asyncio.create_task(server.serve(sockets=sockets)))
    if child:
        return server, None
    await _first_admin_hint(container)
    if settings.api_workers > 1:
        tasks.append(asyncio.create_task(_run_children(settings.api_workers - 1, host, port, stop)))
    tasks.append(
        asyncio.create_task(
            purge_periodically(container.uow, settings.idempotency_purge_interval_s, stop)
        )
    )
    grpc_server: grpc.aio.Server | None = None
    if settings.grpc_port:
        grpc_server, health = build_server(container, f"{host}:{settings.grpc_port}")
        await grpc_server.start()
        await mark_serving(health)
    return server, grpc_server


async def _run_children(count: int, host: str, port: int, stop: asyncio.Event) -> None:
    """The other REST workers (controlplane/entrypoints/api_workers.py), until `stop`."""
    children = api_workers.start_children(count, host, port)
    try:
        await stop.wait()
    finally:
        await asyncio.to_thread(api_workers.stop_children, children)


async def _first_admin_hint(container: Container) -> None:
    """While no platform-admin token exists, say how to make the first one (authentication
    is never off: without a token the API answers 401)."""
    async with container.uow() as uow:
        if not await needs_first_admin(uow):
            return
    print(
        "No API token exists yet. Create the first platform-admin token, on the same "
        "database (same AGENTOS_DATABASE_URL), with:\n"
        "    agentos token create --principal admin --platform-admin\n"
        "and give it to the CLI: export AGENTOS_TOKEN=<the printed token>",
        file=sys.stderr,
    )
