"""`agentos`: the command-line interface of DESIGN §4.

Commands that talk to a running control plane use `AGENTOS_API_URL`; commands that run a
component (`serve`, `relay`, `operator`) or administer the database use the settings of
`controlplane.config`.
"""

from __future__ import annotations

from typing import Any

import typer

from controlplane import __version__

app = typer.Typer(
    name="agentos",
    help="Agent OS: a Kubernetes-style control plane for AI agents.",
    no_args_is_help=True,
    add_completion=False,
)
get_app = typer.Typer(help="List resources.", no_args_is_help=True)
describe_app = typer.Typer(help="Show one resource in detail.", no_args_is_help=True)
delete_app = typer.Typer(help="Delete a resource.", no_args_is_help=True)
app.add_typer(get_app, name="get")
app.add_typer(describe_app, name="describe")
app.add_typer(delete_app, name="delete")


@app.command()
def version() -> None:
    """Print the Agent OS version."""
    typer.echo(__version__)


def _server_class() -> type:
    import contextlib

    import uvicorn

    class ServerWithoutSignals(uvicorn.Server):
        """uvicorn, leaving SIGTERM/SIGINT to our own handler so the relay drains too."""

        @contextlib.contextmanager
        def capture_signals(self):  # type: ignore[no-untyped-def]
            yield

    return ServerWithoutSignals


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Listen address (AGENTOS_HOST)."),
    port: int | None = typer.Option(None, help="Listen port (AGENTOS_PORT)."),
) -> None:
    """Run the API (REST, and gRPC on AGENTOS_GRPC_PORT), controller and relay in one
    process on embedded defaults; AGENTOS_COMPONENTS picks a subset (e.g. `relay`).

    The database is migrated to the latest schema first. The relay runs only when
    AGENTOS_NATS_URL is set; otherwise events stay in the outbox. `/metrics` shows every
    metric of the process (API, controller, runtimes, agents, relay); traces go to
    OTEL_EXPORTER_OTLP_ENDPOINT when it is set.
    """
    import asyncio

    import uvicorn

    from controlplane.api.app import create_app
    from controlplane.api.grpc.server import build_server as build_grpc_server
    from controlplane.api.grpc.server import mark_serving
    from controlplane.bootstrap import Container, stop_on_signals
    from controlplane.cli.outbox import run_relay
    from controlplane.config import component_set, get_settings
    from controlplane.data import migrate
    from controlplane.data.repositories.agents import phase_counter
    from controlplane.observability.inventory import run_inventory
    from controlplane.observability.logging import configure_logging
    from controlplane.observability.tracing import configure_tracing
    from controlplane.service.idempotency import purge_periodically

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    configure_tracing("agentos")
    migrate.upgrade(settings.database_url)

    async def main() -> None:
        container = Container(settings)
        stop = stop_on_signals()
        components = component_set(settings)
        tasks = [asyncio.create_task(run_inventory(phase_counter(container.engine), stop))]
        controller = None
        if "controller" in components:
            controller = container.build_controller()
            tasks.append(asyncio.create_task(controller.run(stop)))
        server = grpc_server = None
        if "api" not in components:
            # No API: /metrics (and a 200 on any path, for probes) on the same address.
            from prometheus_client import start_http_server

            start_http_server(port or settings.port, addr=host or settings.host)
        else:
            await _first_admin_hint(container)
            server = _server_class()(
                uvicorn.Config(
                    create_app(container),
                    host=host or settings.host,
                    port=port or settings.port,
                    log_config=None,
                    access_log=False,
                )
            )
            tasks.append(asyncio.create_task(server.serve()))
            tasks.append(
                asyncio.create_task(
                    purge_periodically(container.uow, settings.idempotency_purge_interval_s, stop)
                )
            )
            if settings.grpc_port:
                grpc_server, health = build_grpc_server(
                    container, f"{host or settings.host}:{settings.grpc_port}"
                )
                await grpc_server.start()
                await mark_serving(health)
        if "relay" in components:
            if settings.nats_url:
                tasks.append(asyncio.create_task(run_relay(container, stop)))
            else:
                typer.echo(
                    "AGENTOS_NATS_URL not set: events stay in the outbox (no relay)", err=True
                )
        await stop.wait()
        if server is not None:
            server.should_exit = True
        if grpc_server is not None:
            await grpc_server.stop(grace=5)
        await asyncio.gather(*tasks, return_exceptions=True)
        if controller is not None:
            for runtime in controller.distinct_runtimes():
                await runtime.close()
        await container.close()

    asyncio.run(main())


async def _first_admin_hint(container: Any) -> None:
    """While no platform-admin token exists, say how to make the first one (authentication
    is never off: without a token the API answers 401)."""
    from controlplane.service.tokens import needs_first_admin

    async with container.uow() as uow:
        if not await needs_first_admin(uow):
            return
    typer.echo(
        "No API token exists yet. Create the first platform-admin token, on the same "
        "database (same AGENTOS_DATABASE_URL), with:\n"
        "    agentos token create --principal admin --platform-admin\n"
        "and give it to the CLI: export AGENTOS_TOKEN=<the printed token>",
        err=True,
    )


from controlplane.cli import agents as _agents  # noqa: E402
from controlplane.cli import tokens as _tokens  # noqa: E402

app.command("apply")(_agents.apply)
get_app.command("agents")(_agents.get_agents)
describe_app.command("agent")(_agents.describe_agent)
delete_app.command("agent")(_agents.delete_agent)
app.add_typer(_tokens.token_app, name="token")


@app.command()
def operator() -> None:
    """Run the Kubernetes operator: Agent resources ↔ the control plane (kopf), one active
    replica through the Lease AGENTOS_OPERATOR_LEASE in AGENTOS_OPERATOR_NAMESPACE.

    Needs AGENTOS_DATABASE_URL (the control plane's database) and Kubernetes credentials
    ($KUBECONFIG, or the Pod's ServiceAccount). Exits 1 when leadership is lost.
    """
    import asyncio

    from controlplane.config import get_settings
    from controlplane.observability.logging import configure_logging
    from operators.agent.operator import run_operator

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    raise typer.Exit(asyncio.run(run_operator(settings)))


from controlplane.cli import outbox as _outbox  # noqa: E402  (registers `relay`, `db`, `outbox`)

_outbox.register(app)


if __name__ == "__main__":
    app()
