"""`/api/v1/tenants/{tenant}/agents`: create, apply, read, list, delete, events."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Request, Response
from sqlalchemy import select

from controlplane.data.tables import outbox
from controlplane.domain.events import rfc3339
from controlplane.service import agents as svc

router = APIRouter(prefix="/api/v1/tenants/{tenant}", tags=["agents"])


def _container(request: Request) -> Any:
    return request.app.state.container


@router.get("/agents")
async def list_agents(tenant: str, request: Request) -> dict[str, Any]:
    """Agents of `tenant` (a Kubernetes-style list)."""
    async with _container(request).uow() as uow:
        items = await uow.agents.list(tenant)
    return {
        "apiVersion": "agentos.io/v1alpha1",
        "kind": "AgentList",
        "items": [a.to_manifest() for a in items],
    }


@router.post("/agents", status_code=201)
async def create_agent(
    tenant: str, request: Request, manifest: dict[str, Any] = Body(...)
) -> dict[str, Any]:
    """Create an agent. 409 ALREADY_EXISTS if the name is taken."""
    container = _container(request)
    async with container.uow(request.state.principal) as uow:
        result = await svc.apply_agent(uow, tenant, manifest, create_only=True)
    container.notify(result.agent.id)
    return result.agent.to_manifest()


@router.put("/agents/{name}")
async def apply_agent(
    tenant: str,
    name: str,
    request: Request,
    response: Response,
    manifest: dict[str, Any] = Body(...),
) -> dict[str, Any]:
    """Create or update (`kubectl apply` semantics); 201 when created, 200 otherwise.
    A `metadata.resourceVersion` in the body or an `If-Match` header makes the write
    conditional (409 CONFLICT when stale)."""
    container = _container(request)
    manifest.setdefault("metadata", {}).setdefault("name", name)
    expected = request.headers.get("if-match", "").strip('"') or (
        manifest["metadata"].pop("resourceVersion", None)
        if isinstance(manifest["metadata"], dict)
        else None
    )
    if isinstance(manifest.get("metadata"), dict) and manifest["metadata"].get("name") != name:
        from controlplane.domain.errors import FieldError, ValidationFailed

        raise ValidationFailed(
            f"metadata.name must be {name!r} (the name in the path)",
            errors=[FieldError("/metadata/name", f"must be {name!r}")],
        )
    async with container.uow(request.state.principal) as uow:
        result = await svc.apply_agent(
            uow, tenant, manifest, expected_resource_version=expected or None
        )
    container.notify(result.agent.id)
    response.status_code = 201 if result.created else 200
    return result.agent.to_manifest()


@router.get("/agents/{name}")
async def get_agent(tenant: str, name: str, request: Request) -> dict[str, Any]:
    """One agent, with status and its transition history under `status.history`."""
    async with _container(request).uow() as uow:
        record = await uow.agents.get(tenant, name)
        history = await uow.agents.transitions(record.id)
    body: dict[str, Any] = record.to_manifest()
    body["status"]["history"] = [
        {
            "from": h["from_phase"],
            "to": h["to_phase"],
            "reason": h["reason"],
            "message": h["message"],
            "at": rfc3339(h["occurred_at"]),
        }
        for h in history
    ]
    return body


@router.delete("/agents/{name}", status_code=202)
async def delete_agent(tenant: str, name: str, request: Request) -> dict[str, Any]:
    """Request deletion: the agent goes Terminating, then disappears once its sandbox is
    removed (202 Accepted)."""
    container = _container(request)
    async with container.uow(request.state.principal) as uow:
        record = await svc.delete_agent(uow, tenant, name)
    container.notify(record.id)
    return record.to_manifest()


@router.get("/agents/{name}/events")
async def agent_events(tenant: str, name: str, request: Request) -> dict[str, Any]:
    """The agent's events from the outbox, in sequence order, with their delivery state."""
    async with _container(request).uow() as uow:
        record = await uow.agents.get(tenant, name)
        rows = await uow.connection.execute(
            select(outbox)
            .where(outbox.c.aggregate_type == "agent", outbox.c.aggregate_id == record.id)
            .order_by(outbox.c.sequence)
        )
        items = [
            {
                "event_id": r.event_id,
                "event_type": r.event_type,
                "sequence": r.sequence,
                "occurred_at": rfc3339(r.occurred_at),
                "state": r.state,
                "payload": r.payload,
            }
            for r in rows
        ]
    return {"items": items}
