"""`agentos`: the command-line interface of architecture/api-compatibility.md.

Commands that talk to a running control plane use `AGENTOS_API_URL`; commands that run a
component (`serve`, `relay`, `operator`) or administer the database use the settings of
`controlplane.config`.
"""

from __future__ import annotations

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
cancel_app = typer.Typer(help="Cancel a resource.", no_args_is_help=True)
logs_app = typer.Typer(help="Print the output of a resource.", no_args_is_help=True)
approve_app = typer.Typer(help="Approve what a resource waits for.", no_args_is_help=True)
reject_app = typer.Typer(help="Reject what a resource waits for.", no_args_is_help=True)
replay_app = typer.Typer(help="Replay a resource.", no_args_is_help=True)
app.add_typer(get_app, name="get")
app.add_typer(describe_app, name="describe")
app.add_typer(delete_app, name="delete")
app.add_typer(cancel_app, name="cancel")
app.add_typer(logs_app, name="logs")
app.add_typer(approve_app, name="approve")
app.add_typer(reject_app, name="reject")
app.add_typer(replay_app, name="replay")


@app.command()
def version() -> None:
    """Print the Agent OS version."""
    typer.echo(__version__)


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
    from controlplane.config import get_settings
    from controlplane.entrypoints import serve as serve_process

    serve_process.main(get_settings(), host, port)


from controlplane.cli import agents as _agents  # noqa: E402
from controlplane.cli import approvals as _approvals  # noqa: E402
from controlplane.cli import replay as _replay  # noqa: E402
from controlplane.cli import runs as _runs  # noqa: E402
from controlplane.cli import suspension as _suspension  # noqa: E402
from controlplane.cli import tokens as _tokens  # noqa: E402

app.command("apply")(_agents.apply)
get_app.command("agents")(_agents.get_agents)
describe_app.command("agent")(_agents.describe_agent)
delete_app.command("agent")(_agents.delete_agent)
app.command("run")(_runs.run)
get_app.command("runs")(_runs.get_runs)
describe_app.command("run")(_runs.describe_run)
cancel_app.command("run")(_runs.cancel_run)
logs_app.command("agent")(_runs.logs_agent)
app.command("audit")(_runs.audit)
get_app.command("approvals")(_approvals.get_approvals)
approve_app.command("run")(_approvals.approve_run)
reject_app.command("run")(_approvals.reject_run)
replay_app.command("run")(_replay.replay_run)
app.add_typer(_tokens.token_app, name="token")
app.add_typer(_suspension.suspend_app, name="suspend")
app.add_typer(_suspension.resume_app, name="resume")


@app.command()
def operator() -> None:
    """Run the Kubernetes operator: Agent resources ↔ the control plane (kopf), one active
    replica through the Lease AGENTOS_OPERATOR_LEASE in AGENTOS_OPERATOR_NAMESPACE.

    Needs AGENTOS_DATABASE_URL (the control plane's database) and Kubernetes credentials
    ($KUBECONFIG, or the Pod's ServiceAccount). Exits 1 when leadership is lost.
    """
    from controlplane.config import get_settings
    from controlplane.entrypoints import operator as operator_process

    raise typer.Exit(operator_process.main(get_settings()))


from controlplane.cli import outbox as _outbox  # noqa: E402  (registers `relay`, `db`, `outbox`)

_outbox.register(app)


if __name__ == "__main__":
    app()
