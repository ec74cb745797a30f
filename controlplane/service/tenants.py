"""Use cases on tenants. Every change: row + outbox event + audit entry, one UnitOfWork."""

from __future__ import annotations

from collections.abc import Mapping

from controlplane.data.repositories import TenantRecord
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.events import NewEvent
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
async def set_tenant_quota(uow: UnitOfWork, name: str, quota: Mapping[str, int]) -> TenantRecord:
    """Replace the quota of tenant `name`; emits `tenant.quota_changed`. Raises NotFound."""
    record = await uow.tenants.set_quota(name, quota)
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
