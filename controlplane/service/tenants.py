"""Use cases on tenants. Every change: row + outbox event + audit entry, one UnitOfWork."""

from __future__ import annotations

from collections.abc import Mapping

from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.errors import TenantNotEmpty
from controlplane.domain.events.envelope import NewEvent, utcnow
from controlplane.domain.records import TenantRecord
from controlplane.observability.tracing import traced


@traced("service.create_tenant")
async def create_tenant(
    uow: UnitOfWork, name: str, quota: Mapping[str, int] | None = None
) -> TenantRecord:
    """Create tenant `name` with `quota`; emits `tenant.created`. Raises AlreadyExists."""
    record = await uow.tenants.add(name, quota or {})
    event = await uow.outbox.add(
        NewEvent(
            event_type="tenant.created",
            aggregate_type="tenant",
            aggregate_id=name,
            tenant_id=name,
            payload={"name": name, "quota": record.quota},
        )
    )
    await uow.audit.record("tenant.create", f"tenants/{name}", tenant=name, event_id=event.event_id)
    await uow.commit()
    return record


@traced("service.set_tenant_quota")
async def set_tenant_quota(
    uow: UnitOfWork,
    name: str,
    quota: Mapping[str, int],
    *,
    expected_resource_version: int | None = None,
) -> TenantRecord:
    """Replace the quota of tenant `name`; emits `tenant.quota_changed`. Raises NotFound,
    Conflict (stale `expected_resource_version`)."""
    record = await uow.tenants.set_quota(name, quota, expected_version=expected_resource_version)
    event = await uow.outbox.add(
        NewEvent(
            event_type="tenant.quota_changed",
            aggregate_type="tenant",
            aggregate_id=name,
            tenant_id=name,
            payload={"name": name, "quota": record.quota},
        )
    )
    await uow.audit.record(
        "tenant.set_quota",
        f"tenants/{name}",
        tenant=name,
        event_id=event.event_id,
        details={"quota": record.quota},
    )
    await uow.commit()
    return record


async def delete_tenant(uow: UnitOfWork, name: str) -> None:
    """Delete tenant `name`, which must have no agents, and revoke its tokens (a tenant made
    again later under the same name must not inherit them); emits `tenant.deleted`.
    Raises NotFound, TenantNotEmpty."""
    await uow.tenants.get(name)
    if await uow.agents.page(name, after=None, limit=1):
        raise TenantNotEmpty(f"tenant {name!r} still has agents; delete them first")
    now = utcnow()
    for token in await uow.tokens.list(name):
        if token.revoked_at is None:
            await uow.tokens.revoke(token.id, now)
    await uow.tenants.remove(name)
    event = await uow.outbox.add(
        NewEvent(
            event_type="tenant.deleted",
            aggregate_type="tenant",
            aggregate_id=name,
            tenant_id=name,
            payload={"name": name},
        )
    )
    await uow.audit.record("tenant.delete", f"tenants/{name}", tenant=name, event_id=event.event_id)
    await uow.commit()
