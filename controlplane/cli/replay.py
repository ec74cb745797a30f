"""`agentos replay run NAME`, and the side-by-side view of a replay and its origin that
`agentos describe run` prints (architecture/replay.md), as a client of the REST API."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from controlplane.cli.agents import _client, _fail


def replay_run(
    name: str,
    namespace: str = typer.Option("default", "-n", "--namespace", help="Tenant."),
    mode: str = typer.Option("recorded", "--mode", help="recorded | live"),
    from_step: int | None = typer.Option(
        None, "--from-step", help="Serve the steps before N; run N and after live."
    ),
) -> None:
    """Replay run NAME as a new run of its agent with its input: recorded (its steps served
    from the journal, no side effects) or live."""
    body: dict[str, Any] = {"mode": mode}
    if from_step is not None:
        body["fromStep"] = from_step
    with _client() as client:
        r = client.post(f"/api/v1/tenants/{namespace}/runs/{name}/replay", json=body)
    if r.status_code >= 400:
        _fail(r)
    made = r.json()["metadata"]["name"]
    typer.echo(f"run/{made} created (replay of run/{name}, {mode})")


def _cell(step: dict[str, Any] | None) -> str:
    if step is None:
        return "-"
    text = f"{step['type']} {step['name']} {json.dumps(step.get('input'))} {step['status']}"
    return text if len(text) <= 44 else text[:41] + "..."


def print_beside(namespace: str, replay: dict[str, Any], steps: list[dict[str, Any]]) -> None:
    """The replay's origin, its divergences, and both journals side by side by callId (a
    step served from the origin's journal has no row of its own on the replay)."""
    link = replay["status"]["replayOf"]
    with _client() as client:
        r = client.get(f"/api/v1/tenants/{namespace}/runs/{link['name']}/steps")
    origin: list[dict[str, Any]] = r.json()["items"] if r.status_code < 400 else []
    out = sys.stdout
    since = f", from step {link['fromStep']}" if link.get("fromStep") else ""
    out.write(f"{'Replay of:':<14} {link['name']} ({link['mode']}{since})\n")
    diverged = {d["callId"]: d for d in replay["status"].get("divergences", [])}
    for d in diverged.values():
        out.write(
            f"{'Divergence:':<14} step {d['step']} (callId {d['callId']}): recorded "
            f"{json.dumps(d['recorded'])}, now {json.dumps(d['actual'])}\n"
        )
    own = {s["callId"]: s for s in steps}
    out.write(f"  {'CALL':<6} {'ORIGIN':<44} REPLAY\n")
    for call_id in dict.fromkeys([*(s["callId"] for s in origin), *own]):
        recorded = next((s for s in origin if s["callId"] == call_id), None)
        mine = own.get(call_id)
        shown = _cell(mine) if mine else ("(from the journal)" if recorded else "-")
        mark = "  <- diverged" if call_id in diverged else ""
        out.write(f"  {call_id:<6} {_cell(recorded):<44} {shown}{mark}\n")
