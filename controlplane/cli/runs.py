"""`agentos run|get runs|describe run|cancel run|logs agent|audit`: runs and what happened,
as a client of the REST API (see controlplane/cli/client.py)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import typer
import yaml

from controlplane.cli.agents import _client, _fail

TERMINAL = {"Succeeded", "Failed", "Canceled", "TimedOut"}
STREAM_TIMEOUT = httpx.Timeout(30.0, read=None)
POLL_S = 0.5


def _input(value: str) -> Any:
    """`--input`: JSON text, or `@FILE` holding it."""
    text = Path(value[1:]).read_text() if value.startswith("@") else value
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        typer.echo(f"error: --input is not JSON: {exc}", err=True)
        raise typer.Exit(2) from None


def _labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            typer.echo(f"error: --label {pair!r}: give key=value", err=True)
            raise typer.Exit(2)
        labels[key] = value
    return labels


def _ms(step: dict[str, Any]) -> str:
    try:
        start = datetime.fromisoformat(step["startedAt"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(step["endedAt"].replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return "?"
    return f"{(end - start).total_seconds() * 1000:.0f}ms"


def _tokens(usage: dict[str, Any] | None) -> str:
    usage = usage or {}
    return f"{usage.get('inputTokens', 0)}/{usage.get('outputTokens', 0)} tokens"


def step_line(step: dict[str, Any]) -> str:
    """One step as the CLI prints it."""
    return (
        f"{step['callId']}  {step['type']:<6} {step['name']:<20} {step['status']:<9} "
        f"{_ms(step):>7}  {_tokens(step.get('usage'))}"
    )


def step_tree(steps: list[dict[str, Any]]) -> Iterator[str]:
    """The steps as a tree by `parentCallId`, children in the order they were recorded."""
    ids = {s["callId"] for s in steps}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for step in steps:
        parent = step.get("parentCallId")
        children.setdefault(parent if parent in ids else None, []).append(step)

    def walk(parent: str | None, depth: int) -> Iterator[str]:
        for step in children.get(parent, []):
            yield "  " * depth + ("└─ " if depth else "") + step_line(step)
            yield from walk(step["callId"], depth + 1)

    yield from walk(None, 0)


def _events(client: httpx.Client, url: str, after: str | None) -> Iterator[tuple[str, Any]]:
    """(id, data) of each server-sent event of `url` after the id `after`."""
    headers = {"Last-Event-ID": after} if after else {}
    with client.stream("GET", url, headers=headers, timeout=STREAM_TIMEOUT) as response:
        if response.status_code >= 400:
            response.read()
            _fail(response)
        event_id, data = "", ""
        for line in response.iter_lines():
            if line == "":
                if data:
                    yield event_id, json.loads(data)
                event_id, data = "", ""
            elif line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                data = line[6:]


def _follow(client: httpx.Client, tenant: str, name: str) -> dict[str, Any]:
    """Print each event of the run as it happens, reconnecting with Last-Event-ID until the
    run ends; returns the run as it ended."""
    url = f"/api/v1/tenants/{tenant}/runs/{name}/events"
    last: str | None = None
    while True:
        for event_id, data in _events(client, url, last):
            last = event_id
            if data["type"] == "run.step_recorded":
                typer.echo(f"  step  {step_line(data['step'])}")
            else:
                phase = data.get("toPhase") or data["run"].get("status", {}).get("phase", "")
                typer.echo(f"{data['type']:<18} {phase:<13} {data.get('reason', '')}")
        run = client.get(f"/api/v1/tenants/{tenant}/runs/{name}")
        if run.status_code >= 400:
            _fail(run)
        if run.json()["status"]["phase"] in TERMINAL:
            body: dict[str, Any] = run.json()
            return body


def _wait(client: httpx.Client, tenant: str, name: str) -> dict[str, Any]:
    while True:
        r = client.get(f"/api/v1/tenants/{tenant}/runs/{name}")
        if r.status_code >= 400:
            _fail(r)
        body: dict[str, Any] = r.json()
        if body["status"]["phase"] in TERMINAL:
            return body
        time.sleep(POLL_S)


def run(
    agent: str = typer.Argument(..., help="The agent to give the run."),
    input_: str = typer.Option(..., "--input", "-i", help="JSON, or @FILE holding JSON."),
    namespace: str = typer.Option("default", "-n", "--namespace", help="Tenant."),
    wait: bool = typer.Option(False, "--wait", help="Wait for the end; print the output."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Stream the run's events."),
    timeout_seconds: int | None = typer.Option(None, "--timeout-seconds", help="1..86400."),
    label: list[str] = typer.Option([], "--label", "-l", help="key=value (repeatable)."),
) -> None:
    """Give AGENT a run. With --wait or --follow, exit non-zero unless it Succeeded."""
    body: dict[str, Any] = {"input": _input(input_)}
    if timeout_seconds is not None:
        body["timeoutSeconds"] = timeout_seconds
    if label:
        body["labels"] = _labels(label)
    with _client() as client:
        r = client.post(f"/api/v1/tenants/{namespace}/agents/{agent}/runs", json=body)
        if r.status_code >= 400:
            _fail(r)
        name = r.json()["metadata"]["name"]
        typer.echo(f"run/{name} created")
        if not (wait or follow):
            return
        final = _follow(client, namespace, name) if follow else _wait(client, namespace, name)
    status = final["status"]
    typer.echo(f"run/{name} {status['phase']} {status.get('reason', '')}".rstrip())
    if status.get("output") is not None:
        typer.echo(json.dumps(status["output"], indent=2))
    if status.get("error"):
        typer.echo(f"error: {status['error'].get('type')}: {status['error'].get('message')}")
    if status["phase"] != "Succeeded":
        raise typer.Exit(1)


def get_runs(
    namespace: str = typer.Option("default", "-n", "--namespace", help="Tenant."),
    agent: str | None = typer.Option(None, "--agent", help="Only this agent's runs."),
    phase: str | None = typer.Option(None, "--phase", help="e.g. Running, or Pending,Dispatched"),
    output: str = typer.Option("", "-o", "--output", help="wide | yaml | json"),
) -> None:
    """List the runs of a tenant, newest first."""
    params: dict[str, str] = {k: v for k, v in (("agent", agent), ("phase", phase)) if v}
    items: list[dict[str, Any]] = []
    with _client() as client:
        while True:  # every page (limit + continue)
            r = client.get(f"/api/v1/tenants/{namespace}/runs", params=params)
            if r.status_code >= 400:
                _fail(r)
            page = r.json()
            items += page["items"]
            if not page["metadata"].get("continue"):
                break
            params["continue"] = page["metadata"]["continue"]
    body = {"apiVersion": "agentos.io/v1alpha1", "kind": "RunList", "items": items}
    if output in ("json", "yaml"):
        text = json.dumps(body, indent=2) if output == "json" else yaml.safe_dump(body)
        typer.echo(text)
        return
    wide = output == "wide"
    header = f"{'NAME':<18} {'AGENT':<20} {'PHASE':<13} {'ATTEMPT':>7}  {'CREATED':<27}"
    typer.echo(header + (f" {'REASON':<18} TOKENS" if wide else ""))
    for item in items:
        md, st = item["metadata"], item["status"]
        line = (
            f"{md['name']:<18} {md['agent']:<20} {st['phase']:<13} {st['attempt']:>7}  "
            f"{md['creationTimestamp']:<27}"
        )
        if wide:
            line += f" {st.get('reason', ''):<18} {_tokens(st.get('usage'))}"
        typer.echo(line)


def describe_run(
    name: str,
    namespace: str = typer.Option("default", "-n", "--namespace", help="Tenant."),
) -> None:
    """Show a run: status, then its steps as a tree with durations and tokens."""
    with _client() as client:
        r = client.get(f"/api/v1/tenants/{namespace}/runs/{name}")
        if r.status_code >= 400:
            _fail(r)
        steps = client.get(f"/api/v1/tenants/{namespace}/runs/{name}/steps")
        if steps.status_code >= 400:
            _fail(steps)
    run_, out = r.json(), sys.stdout
    md, st = run_["metadata"], run_["status"]
    for key, value in (
        ("Name", md["name"]),
        ("Tenant", md["tenant"]),
        ("Agent", md["agent"]),
        ("UID", md["uid"]),
        ("Created", md["creationTimestamp"]),
        ("Phase", st["phase"]),
        ("Reason", st.get("reason", "")),
        ("Message", st.get("message", "")),
        ("Attempt", st.get("attempt", 0)),
        ("Timeout", f"{run_['spec']['timeoutSeconds']}s"),
        ("Started", st.get("startedAt") or ""),
        ("Finished", st.get("finishedAt") or ""),
        ("Usage", _tokens(st.get("usage"))),
    ):
        out.write(f"{key + ':':<14} {value}\n")
    out.write(f"{'Input:':<14} {json.dumps(run_['spec'].get('input'))}\n")
    if st.get("output") is not None:
        out.write(f"{'Output:':<14} {json.dumps(st['output'])}\n")
    if st.get("error"):
        out.write(f"{'Error:':<14} {st['error'].get('type')}: {st['error'].get('message')}\n")
    out.write("Steps:\n")
    for line in step_tree(steps.json()["items"]):
        out.write(f"  {line}\n")
    if st.get("replayOf"):
        from controlplane.cli.replay import print_beside

        print_beside(namespace, run_, steps.json()["items"])


def cancel_run(
    name: str,
    namespace: str = typer.Option("default", "-n", "--namespace", help="Tenant."),
) -> None:
    """Cancel a run that has not ended."""
    with _client() as client:
        r = client.post(f"/api/v1/tenants/{namespace}/runs/{name}/cancel")
    if r.status_code >= 400:
        _fail(r)
    typer.echo(f"run/{name} canceled")


def logs_agent(
    name: str,
    namespace: str = typer.Option("default", "-n", "--namespace", help="Tenant."),
    follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing new output."),
    tail: int = typer.Option(100, "--tail", help="Lines from the end."),
) -> None:
    """Print the output of an agent's sandbox."""
    url = f"/api/v1/tenants/{namespace}/agents/{name}/logs"
    params = {"tailLines": str(tail), **({"follow": "true"} if follow else {})}
    with (
        _client() as client,
        client.stream("GET", url, params=params, timeout=STREAM_TIMEOUT) as r,
    ):
        if r.status_code >= 400:
            r.read()
            _fail(r)
        for chunk in r.iter_text():
            sys.stdout.write(chunk)
            sys.stdout.flush()


def audit(
    namespace: str = typer.Option("default", "-n", "--namespace", help="Tenant."),
    resource: str | None = typer.Option(None, "--resource", help="e.g. tenants/t/agents/a"),
    actor: str | None = typer.Option(None, "--actor", help="A principal."),
    output: str = typer.Option("", "-o", "--output", help="json | yaml"),
) -> None:
    """Show the audit trail of a tenant (tenant admins), oldest first."""
    params = {k: v for k, v in (("resource", resource), ("actor", actor)) if v}
    items: list[dict[str, Any]] = []
    with _client() as client:
        while True:
            r = client.get(f"/api/v1/tenants/{namespace}/audit", params=params)
            if r.status_code >= 400:
                _fail(r)
            page = r.json()
            items += page["items"]
            if not page["metadata"].get("continue"):
                break
            params["continue"] = page["metadata"]["continue"]
    if output in ("json", "yaml"):
        typer.echo(json.dumps(items, indent=2) if output == "json" else yaml.safe_dump(items))
        return
    typer.echo(f"{'TIME':<27} {'PRINCIPAL':<32} {'ACTION':<18} RESOURCE")
    for e in items:
        typer.echo(f"{e['occurredAt']:<27} {e['principal']:<32} {e['action']:<18} {e['resource']}")
