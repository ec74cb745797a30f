"""`agentos apply|get|describe|delete`: the CLI as a client of the REST API
(`AGENTOS_API_URL` and `AGENTOS_TOKEN`, or the config file: see controlplane/cli/client.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx
import typer
import yaml


def _client() -> httpx.Client:
    from controlplane.cli.client import client

    return client()


def _fail(response: httpx.Response) -> None:
    try:
        problem = response.json()
        detail = problem.get("detail", response.text)
        code = problem.get("code", response.status_code)
    except ValueError:
        detail, code = response.text, response.status_code
    typer.echo(f"error: {code}: {detail}", err=True)
    raise typer.Exit(1)


def load_manifests(path: Path) -> list[dict[str, Any]]:
    """Every YAML document in FILE, or in every *.yaml / *.yml / *.json of DIR (sorted)."""
    files = (
        sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
        if path.is_dir()
        else [path]
    )
    docs: list[dict[str, Any]] = []
    for f in files:
        docs.extend(d for d in yaml.safe_load_all(f.read_text()) if d)
    return docs


def apply(
    filename: Path = typer.Option(
        ..., "-f", "--filename", exists=True, help="A manifest file or a folder of them."
    ),
    namespace: str = typer.Option(
        "default", "-n", "--namespace", help="Tenant, unless the manifest names one."
    ),
) -> None:
    """Create or update agents from manifests."""
    failed = False
    with _client() as client:
        for doc in load_manifests(filename):
            meta = doc.get("metadata") or {}
            tenant = meta.get("namespace") or namespace
            name = meta.get("name", "")
            r = client.put(f"/api/v1/tenants/{tenant}/agents/{name}", json=doc)
            if r.status_code >= 400:
                problem = r.json() if r.headers.get("content-type", "").endswith("json") else {}
                detail = problem.get("detail", r.text)
                typer.echo(f"agent/{name or '?'}: error: {problem.get('code')}: {detail}", err=True)
                failed = True
                continue
            verb = "created" if r.status_code == 201 else "configured"
            typer.echo(f"agent/{name} {verb}")
    if failed:
        raise typer.Exit(1)


def get_agents(
    namespace: str = typer.Option("default", "-n", "--namespace", help="Tenant."),
    output: str = typer.Option("", "-o", "--output", help="wide | yaml | json"),
) -> None:
    """List the agents of a tenant."""
    items: list[dict[str, Any]] = []
    params: dict[str, str] = {}
    with _client() as client:
        while True:  # every page (limit + continue)
            r = client.get(f"/api/v1/tenants/{namespace}/agents", params=params)
            if r.status_code >= 400:
                _fail(r)
            page = r.json()
            items += page["items"]
            if not page["metadata"].get("continue"):
                break
            params = {"continue": page["metadata"]["continue"]}
    body = {**page, "metadata": {"resourceVersion": page["metadata"]["resourceVersion"]}}
    body["items"] = items
    if output == "json":
        typer.echo(json.dumps(body, indent=2))
        return
    if output == "yaml":
        typer.echo(yaml.safe_dump(body, sort_keys=False))
        return
    wide = output == "wide"
    header = f"{'NAME':<24} {'PHASE':<12} {'RUNTIME':<8} {'RESTARTS':>8}"
    header += f"  {'NODE':<10} {'SANDBOX':<40} REASON" if wide else ""
    typer.echo(header)
    for item in body["items"]:
        st = item.get("status", {})
        line = (
            f"{item['metadata']['name']:<24} {st.get('phase', ''):<12} "
            f"{item['spec']['runtime']['class']:<8} {st.get('restartCount', 0):>8}"
        )
        if wide:
            line += (
                f"  {st.get('node') or '':<10} {st.get('sandboxID') or '':<40} "
                f"{st.get('reason', '')}"
            )
        typer.echo(line)


def describe_agent(
    name: str,
    namespace: str = typer.Option("default", "-n", "--namespace", help="Tenant."),
) -> None:
    """Show an agent: spec, status, conditions and its transition history."""
    with _client() as client:
        r = client.get(f"/api/v1/tenants/{namespace}/agents/{name}")
    if r.status_code >= 400:
        _fail(r)
    a = r.json()
    st = a.get("status", {})
    out = sys.stdout
    out.write(f"Name:          {a['metadata']['name']}\nTenant:        {namespace}\n")
    out.write(f"UID:           {a['metadata']['uid']}\n")
    out.write(
        f"Generation:    {a['metadata']['generation']} "
        f"(observed {st.get('observedGeneration', 0)})\n"
    )
    out.write(
        f"Image:         {a['spec']['image']}\nRuntime:       {a['spec']['runtime']['class']}\n"
    )
    out.write(f"Phase:         {st.get('phase')}\nReason:        {st.get('reason', '')}\n")
    out.write(
        f"Message:       {st.get('message', '')}\nRestarts:      {st.get('restartCount', 0)}\n"
    )
    out.write(
        f"Node:          {st.get('node') or ''}\nSandbox:       {st.get('sandboxID') or ''}\n"
    )
    out.write("Conditions:\n")
    for c in st.get("conditions", []):
        out.write(f"  {c['type']:<10} {c['status']:<6} {c['reason']:<20} {c['message']}\n")
    out.write("History:\n")
    for h in st.get("history", []):
        out.write(
            f"  {h['at']}  {h['from'] or '-':<11} -> {h['to']:<11} "
            f"{h['reason']:<20} {h['message']}\n"
        )


def delete_agent(
    name: str,
    namespace: str = typer.Option("default", "-n", "--namespace", help="Tenant."),
) -> None:
    """Delete an agent (it passes through Terminating)."""
    with _client() as client:
        r = client.delete(f"/api/v1/tenants/{namespace}/agents/{name}")
    if r.status_code >= 400:
        _fail(r)
    typer.echo(f"agent/{name} deleted")
