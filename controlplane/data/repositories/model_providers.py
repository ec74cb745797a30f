"""Model providers of tenants (table `model_providers`) and what their calls used per budget
window (table `model_usage`); architecture/model-gateway.md.

Works on the open transaction of a UnitOfWork and never commits. Writes check
`resource_version` (optimistic concurrency, as agents and tenants).
"""

from __future__ import annotations

import builtins
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from controlplane.data.dialect import dialect_insert
from controlplane.data.tables import model_providers, model_usage
from controlplane.domain.errors import AlreadyExists, Conflict, ModelNotFound
from controlplane.domain.events.envelope import utcnow
from controlplane.domain.providers.model import ProviderRecord, ProviderSpec
from controlplane.domain.runs.model import Usage


@dataclass(frozen=True)
class WindowUsage:
    """What a tenant's calls to `provider` used in the window starting at `window_start`
    (seconds since the epoch); `cost_usd` in US dollars."""

    provider: str
    window_start: int
    requests: int
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cost_usd: Decimal

    @property
    def tokens(self) -> int:
        """Input + output tokens: what a `tokenBudget` counts."""
        return self.input_tokens + self.output_tokens


def _record(row: Any) -> ProviderRecord:
    return ProviderRecord(
        row.id,
        row.tenant,
        row.name,
        ProviderSpec.model_validate(row.spec),
        row.resource_version,
        row.created_at,
    )


class ModelProviderRepository:
    """Providers by (tenant, name), and their usage windows."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, tenant: str, spec: ProviderSpec) -> ProviderRecord:
        """Insert provider `spec.name` of `tenant`. Raises AlreadyExists."""
        now = utcnow()
        record = ProviderRecord(uuid.uuid4().hex, tenant, spec.name or "", spec, 1, now)
        try:
            async with self._conn.begin_nested():
                await self._conn.execute(
                    insert(model_providers).values(
                        id=record.id,
                        tenant=tenant,
                        name=record.name,
                        spec=spec.model_dump(mode="json"),
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:
            raise AlreadyExists(f"model provider {record.name!r} already exists") from None
        return record

    async def replace(
        self, current: ProviderRecord, spec: ProviderSpec, *, expected_version: int | None = None
    ) -> ProviderRecord:
        """Replace the spec of `current`; with `expected_version`, only at that version.
        Raises Conflict when it is stale."""
        version = current.resource_version if expected_version is None else expected_version
        result = await self._conn.execute(
            update(model_providers)
            .where(
                model_providers.c.id == current.id, model_providers.c.resource_version == version
            )
            .values(
                spec=spec.model_dump(mode="json"),
                resource_version=model_providers.c.resource_version + 1,
                updated_at=utcnow(),
            )
        )
        if result.rowcount != 1:
            raise Conflict(f"model provider {current.name!r} is not at resourceVersion {version}")
        return ProviderRecord(
            current.id, current.tenant, current.name, spec, version + 1, current.created_at
        )

    async def find(self, tenant: str, name: str) -> ProviderRecord | None:
        """The provider, or None."""
        row = (
            await self._conn.execute(
                select(model_providers).where(
                    model_providers.c.tenant == tenant, model_providers.c.name == name
                )
            )
        ).first()
        return _record(row) if row is not None else None

    async def get(self, tenant: str, name: str) -> ProviderRecord:
        """The provider. Raises ModelNotFound."""
        found = await self.find(tenant, name)
        if found is None:
            raise ModelNotFound(f"model provider {name!r} not found in tenant {tenant!r}")
        return found

    async def list(
        self, tenant: str, *, after: str | None = None, limit: int = 1000
    ) -> builtins.list[ProviderRecord]:
        """Up to `limit` providers of `tenant` by name, after the name `after`."""
        query = (
            select(model_providers)
            .where(model_providers.c.tenant == tenant)
            .order_by(model_providers.c.name)
            .limit(limit)
        )
        if after is not None:
            query = query.where(model_providers.c.name > after)
        return [_record(r) for r in await self._conn.execute(query)]

    async def remove(self, tenant: str, name: str) -> None:
        """Delete the provider (its usage rows stay: the tenant's spend is history).
        Raises ModelNotFound."""
        result = await self._conn.execute(
            delete(model_providers).where(
                model_providers.c.tenant == tenant, model_providers.c.name == name
            )
        )
        if result.rowcount != 1:
            raise ModelNotFound(f"model provider {name!r} not found in tenant {tenant!r}")

    async def window_tokens(self, tenant: str, provider: str, window_start: int) -> int:
        """Input + output tokens the tenant used on `provider` in that window (0: none)."""
        query = select(model_usage.c.input_tokens + model_usage.c.output_tokens).where(
            model_usage.c.tenant == tenant,
            model_usage.c.provider == provider,
            model_usage.c.window_start == window_start,
        )
        return int((await self._conn.execute(query)).scalar() or 0)

    async def add_usage(
        self, tenant: str, provider: str, window_start: int, usage: Usage, *, requests: int = 1
    ) -> None:
        """Count `requests` calls that used `usage` in their window (INSERT ... ON CONFLICT
        DO UPDATE: safe under concurrent writers, one statement)."""
        cost = Decimal(str(usage.costUsd))
        values = {
            "requests": requests,
            "input_tokens": usage.inputTokens,
            "output_tokens": usage.outputTokens,
            "cached_input_tokens": usage.cachedInputTokens,
            "cost_usd": cost,
        }
        stmt = dialect_insert(self._conn, model_usage).values(
            tenant=tenant, provider=provider, window_start=window_start, **values
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["tenant", "provider", "window_start"],
            set_={k: model_usage.c[k] + stmt.excluded[k] for k in values},
        )
        await self._conn.execute(stmt)

    async def usage(self, tenant: str, since: int = 0) -> builtins.list[WindowUsage]:
        """The tenant's usage windows starting at or after `since`, by provider, newest
        window first."""
        query = (
            select(model_usage)
            .where(model_usage.c.tenant == tenant, model_usage.c.window_start >= since)
            .order_by(model_usage.c.provider, model_usage.c.window_start.desc())
        )
        return [
            WindowUsage(
                r.provider,
                r.window_start,
                r.requests,
                r.input_tokens,
                r.output_tokens,
                r.cached_input_tokens,
                Decimal(r.cost_usd),
            )
            for r in await self._conn.execute(query)
        ]

    async def count(self, tenant: str) -> int:
        """How many providers the tenant has."""
        query = select(func.count()).where(model_providers.c.tenant == tenant)
        return int((await self._conn.execute(query)).scalar_one())
