"""`agentos get approvals`, `agentos approve run RUN`, `agentos reject run RUN`: the
approvals runs wait for, decided by a human (architecture/approvals.md), as a client of the
REST API."""

from __future__ import annotations

import json
from typing import Any

import typer
import yaml

from controlplane.cli.agents import _client, _fail


def get_approvals(
    namespace: str = typer.Option("default", "-n", "--namespace", help="Tenant."),
    state: str = typer.Option(
        "pending", "--state", help="pending | approved | rejected | expired | all"
    ),
    output: str = typer.Option("", "-o", "--output", help="yaml | json"),
) -> None:
    """List a tenant's approvals (the pending ones by default), oldest first."""
    params = {} if state == "all" else {"state": state}
    with _client() as client:
        r = client.get(f"/api/v1/tenants/{namespace}/approvals", params=params)
    if r.status_code >= 400:
        _fail(r)
    items: list[dict[str, Any]] = r.json()["items"]
    if output in ("json", "yaml"):
        body = {"kind": "ApprovalList", "items": items}
        typer.echo(json.dumps(body, indent=2) if output == "json" else yaml.safe_dump(body))
        return
    typer.echo(f"{'ID':<37} {'RUN':<18} {'STEP':<6} {'ACTION':<20} {'STATE':<9} DETAILS")
    for a in items:
        typer.echo(
            f"{a['id']:<37} {a['run']:<18} {a['step']:<6} {a['action']:<20} {a['state']:<9} "
            f"{json.dumps(a['details'])}"
        )


def _pending_one(client: Any, namespace: str, run: str) -> str:
    r = client.get(f"/api/v1/tenants/{namespace}/runs/{run}/approvals", params={"state": "pending"})
    if r.status_code >= 400:
        _fail(r)
    pending = r.json()["items"]
    if len(pending) != 1:
        typer.echo(
            f"error: run {run} has {len(pending)} pending approvals; name one with --approval",
            err=True,
        )
        raise typer.Exit(1)
    return str(pending[0]["id"])


def _decide(
    decision: str,
    run: str,
    namespace: str,
    approval: str | None,
    comment: str,
    edits: str | None,
) -> None:
    body: dict[str, Any] = {"decision": decision, "comment": comment}
    if edits:
        try:
            body["edits"] = json.loads(edits)
        except json.JSONDecodeError as exc:
            typer.echo(f"error: --edits is not JSON: {exc}", err=True)
            raise typer.Exit(2) from None
    with _client() as client:
        approval_id = approval or _pending_one(client, namespace, run)
        r = client.post(
            f"/api/v1/tenants/{namespace}/runs/{run}/approvals/{approval_id}", json=body
        )
    if r.status_code >= 400:
        _fail(r)
    decided = r.json()
    typer.echo(f"approval/{decided['id']} of run/{run} {decided['state']}")


def approve_run(
    run: str,
    namespace: str = typer.Option("default", "-n", "--namespace", help="Tenant."),
    approval: str | None = typer.Option(
        None, "--approval", help="Its id (default: the one pending)."
    ),
    comment: str = typer.Option("", "--comment", help="For the audit log."),
    edits: str | None = typer.Option(None, "--edits", help="JSON laid over the arguments."),
) -> None:
    """Approve what run RUN waits for (its one pending approval, or --approval ID)."""
    _decide("approve", run, namespace, approval, comment, edits)


def reject_run(
    run: str,
    namespace: str = typer.Option("default", "-n", "--namespace", help="Tenant."),
    approval: str | None = typer.Option(
        None, "--approval", help="Its id (default: the one pending)."
    ),
    comment: str = typer.Option("", "--comment", help="For the audit log."),
) -> None:
    """Reject what run RUN waits for: the agent does not do it, and its handler is told."""
    _decide("reject", run, namespace, approval, comment, None)
