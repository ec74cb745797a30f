"""Use cases on a tenant's model providers (architecture/model-gateway.md): create or
replace, delete, read usage. Each write is the row and an audit entry in one UnitOfWork;
the audit entry holds the credential's reference, never a secret (none is ever stored)."""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.data.repositories.model_providers import WindowUsage
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.errors import Conflict
from controlplane.domain.providers.model import ProviderRecord, ProviderSpec
from controlplane.observability.tracing import traced


@dataclass(frozen=True)
class Applied:
    """The provider as stored, and whether this call created it."""

    record: ProviderRecord
    created: bool


@traced("service.apply_model_provider")
async def apply_provider(
    uow: UnitOfWork, tenant: str, spec: ProviderSpec, *, expected_version: str | None = None
) -> Applied:
    """Create provider `spec.name` in `tenant`, or replace its spec (idempotent: the same
    body twice leaves one provider, the second write answering `created=False` and changing
    nothing when the spec is the same). `expected_version` (If-Match) makes it conditional.
    Raises TenantNotFound, Conflict (stale or absent at `expected_version`). Commits."""
    await uow.tenants.get(tenant)
    name = spec.name or ""
    current = await uow.models.find(tenant, name)
    version = int(expected_version) if expected_version and expected_version.isdigit() else None
    if expected_version is not None and version is None:
        raise Conflict(f"model provider {name!r} is not at resourceVersion {expected_version}")
    if current is None:
        if expected_version is not None:
            raise Conflict(f"model provider {name!r} does not exist at {expected_version}")
        record, created = await uow.models.add(tenant, spec), True
    elif current.spec == spec and version in (None, current.resource_version):
        return Applied(current, False)
    else:
        record = await uow.models.replace(current, spec, expected_version=version)
        created = False
    await uow.audit.record(
        "model_provider.create" if created else "model_provider.replace",
        f"tenants/{tenant}/models/{name}",
        tenant=tenant,
        details={"baseUrl": spec.baseUrl, "models": spec.models},
    )
    await uow.commit()
    return Applied(record, created)


async def delete_provider(uow: UnitOfWork, tenant: str, name: str) -> None:
    """Delete provider `name` of `tenant` (its usage stays). Raises ModelNotFound. Commits."""
    await uow.models.remove(tenant, name)
    await uow.audit.record(
        "model_provider.delete", f"tenants/{tenant}/models/{name}", tenant=tenant
    )
    await uow.commit()


async def tenant_usage(uow: UnitOfWork, tenant: str, since: int = 0) -> list[WindowUsage]:
    """The tenant's model usage windows since `since` (seconds since the epoch). Raises
    TenantNotFound."""
    await uow.tenants.get(tenant)
    return await uow.models.usage(tenant, since)
