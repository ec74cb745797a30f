"""`/api/v1/tenants`: tenants and their quota."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from controlplane.domain.quantity import CPU_PATTERN, MEMORY_PATTERN, cpu_millis, memory_bytes
from controlplane.service.tenants import create_tenant, set_tenant_quota

router = APIRouter(prefix="/api/v1/tenants", tags=["tenants"])


class Quota(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agents: int | None = Field(default=None, ge=0)
    cpu: str | None = Field(default=None, pattern=CPU_PATTERN)
    memory: str | None = Field(default=None, pattern=MEMORY_PATTERN)

    def as_limits(self) -> dict[str, int]:
        limits: dict[str, int] = {}
        if self.agents is not None:
            limits["agents"] = self.agents
        if self.cpu is not None:
            limits["cpu_millis"] = cpu_millis(self.cpu)
        if self.memory is not None:
            limits["memory_bytes"] = memory_bytes(self.memory)
        return limits


class TenantBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    quota: Quota = Field(default_factory=Quota)


def _view(name: str, quota: dict[str, int], version: int) -> dict[str, Any]:
    return {"name": name, "quota": quota, "resourceVersion": str(version)}


@router.put("/{tenant}")
async def put_tenant(tenant: str, body: TenantBody, request: Request) -> dict[str, Any]:
    """Create a tenant or replace its quota (`agents`, `cpu`, `memory`; absent: no limit)."""
    container = request.app.state.container
    async with container.uow(request.state.principal) as uow:
        if await uow.tenants.find(tenant) is None:
            record = await create_tenant(uow, tenant, body.quota.as_limits())
        else:
            record = await set_tenant_quota(uow, tenant, body.quota.as_limits())
    container.notify_capacity()
    return _view(record.name, record.quota, record.resource_version)


@router.get("/{tenant}")
async def get_tenant(tenant: str, request: Request) -> dict[str, Any]:
    async with request.app.state.container.uow() as uow:
        record = await uow.tenants.get(tenant)
    return _view(record.name, record.quota, record.resource_version)
