"""Tenants and their quota (table `tenants`).

Like every repository, works on the open transaction (an AsyncConnection) of a UnitOfWork
and never commits.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from controlplane.data.dialect import dialect_insert
from controlplane.data.tables import tenants
from controlplane.domain.errors import AlreadyExists, Conflict, TenantNotEmpty, TenantNotFound
from controlplane.domain.events.envelope import utcnow
from controlplane.domain.records import TenantRecord


class TenantRepository:
    """Tenants and their quota."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, name: str, quota: Mapping[str, int]) -> TenantRecord:
        """Insert a tenant. Raises AlreadyExists if the name is taken."""
        if await self.find(name) is not None:
            raise AlreadyExists(f"tenant {name!r} already exists")
        now = utcnow()
        await self._conn.execute(
            insert(tenants).values(name=name, quota=dict(quota), created_at=now, updated_at=now)
        )
        return TenantRecord(name, dict(quota), 1, now)

    async def ensure(self, name: str) -> bool:
        """Create tenant `name` with no quota unless it exists; True if this call created it.
        Safe under concurrency (INSERT ... ON CONFLICT DO NOTHING)."""
        now = utcnow()
        stmt = (
            dialect_insert(self._conn, tenants)
            .values(name=name, quota={}, created_at=now, updated_at=now)
            .on_conflict_do_nothing(index_elements=["name"])
        )
        return (await self._conn.execute(stmt)).rowcount == 1

    async def find(self, name: str) -> TenantRecord | None:
        """The tenant, or None."""
        row = (await self._conn.execute(select(tenants).where(tenants.c.name == name))).first()
        if row is None:
            return None
        return TenantRecord(row.name, dict(row.quota), row.resource_version, row.created_at)

    async def get(self, name: str) -> TenantRecord:
        """The tenant. Raises NotFound."""
        found = await self.find(name)
        if found is None:
            raise TenantNotFound(f"tenant {name!r} not found")
        return found

    async def set_quota(
        self, name: str, quota: Mapping[str, int], *, expected_version: int | None = None
    ) -> TenantRecord:
        """Replace a tenant's quota, bumping its resource_version; with `expected_version`,
        only if the tenant is still at that version. Raises NotFound, Conflict."""
        current = await self.get(name)
        version = current.resource_version if expected_version is None else expected_version
        result = await self._conn.execute(
            update(tenants)
            .where(tenants.c.name == name, tenants.c.resource_version == version)
            .values(
                quota=dict(quota),
                resource_version=tenants.c.resource_version + 1,
                updated_at=utcnow(),
            )
        )
        if result.rowcount != 1:
            raise Conflict(f"tenant {name!r} is not at resourceVersion {version}")
        return TenantRecord(name, dict(quota), version + 1, current.created_at)

    async def list(self, *, after: str | None, limit: int) -> list[TenantRecord]:
        """Up to `limit` tenants by name, after the name `after`."""
        query = select(tenants).order_by(tenants.c.name).limit(limit)
        if after is not None:
            query = query.where(tenants.c.name > after)
        return [
            TenantRecord(r.name, dict(r.quota), r.resource_version, r.created_at)
            for r in await self._conn.execute(query)
        ]

    async def remove(self, name: str) -> None:
        """Delete a tenant row. Raises TenantNotEmpty if agents still reference it."""
        try:
            await self._conn.execute(delete(tenants).where(tenants.c.name == name))
        except IntegrityError:
            raise TenantNotEmpty(f"tenant {name!r} still has agents") from None
