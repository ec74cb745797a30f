"""`agentos suspend agent NAME` and `agentos resume agent NAME` (adr/0019-suspend-resume.md):
clients of POST /api/v1/tenants/{t}/agents/{name}/suspend and /resume."""

from __future__ import annotations

import typer

from controlplane.cli.agents import _client, _fail

suspend_app = typer.Typer(help="Suspend a resource.", no_args_is_help=True)
resume_app = typer.Typer(help="Resume a suspended resource.", no_args_is_help=True)


def _post(namespace: str, name: str, action: str) -> dict[str, object]:
    with _client() as client:
        r = client.post(f"/api/v1/tenants/{namespace}/agents/{name}/{action}")
    if r.status_code >= 400:
        _fail(r)
    body: dict[str, object] = r.json()
    return body


@suspend_app.command("agent")
def suspend_agent(
    name: str, namespace: str = typer.Option("default", "-n", "--namespace", help="Tenant.")
) -> None:
    """Suspend a Ready agent: gVisor keeps memory and files, runc files only."""
    _post(namespace, name, "suspend")
    typer.echo(f"agent/{name} suspending")


@resume_app.command("agent")
def resume_agent(
    name: str, namespace: str = typer.Option("default", "-n", "--namespace", help="Tenant.")
) -> None:
    """Resume a Suspended agent (a run sent to it resumes it too)."""
    _post(namespace, name, "resume")
    typer.echo(f"agent/{name} resuming")
