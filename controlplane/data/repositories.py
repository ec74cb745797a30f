"""Repositories: the only place the service layer's SQL lives.

Each works on the open transaction (an AsyncConnection) of a UnitOfWork; none commits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from controlplane.data.tables import aggregate_sequences, audit_log, outbox, tenants
from controlplane.domain.errors import AlreadyExists, TenantNotFound
from controlplane.domain.events import EventEnvelope, NewEvent, OutboxState, utcnow
from controlplane.observability import tracing
from controlplane.outbox.schema_registry import SchemaRegistry


def dialect_insert(conn: AsyncConnection, table: Any) -> Any:
    """An INSERT that supports ON CONFLICT for the connection's dialect."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


@dataclass(frozen=True)
class TenantRecord:
    """A tenant row. `quota` keys: `agents`, `cpu_millis`, `memory_bytes` (absent: no limit)."""

    name: str
    quota: dict[str, int]
    resource_version: int
    created_at: datetime


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

    async def set_quota(self, name: str, quota: Mapping[str, int]) -> TenantRecord:
        """Replace a tenant's quota, bumping its resource_version. Raises NotFound."""
        current = await self.get(name)
        await self._conn.execute(
            update(tenants)
            .where(tenants.c.name == name)
            .values(
                quota=dict(quota),
                resource_version=tenants.c.resource_version + 1,
                updated_at=utcnow(),
            )
        )
        return TenantRecord(name, dict(quota), current.resource_version + 1, current.created_at)


class OutboxWriter:
    """Writes events to the outbox in the caller's transaction (the transactional outbox).

    The payload is checked against the SchemaRegistry first: a bad payload raises before
    anything is written, and the UnitOfWork rolls the whole change back.
    """

    def __init__(self, conn: AsyncConnection, registry: SchemaRegistry) -> None:
        self._conn = conn
        self._registry = registry
        self.written = 0

    async def _next_sequence(self, aggregate_type: str, aggregate_id: str) -> int:
        # The upsert locks the aggregate's row until commit: writers of one aggregate are
        # serialised, so sequences are gapless and commit in order (a rollback undoes both).
        stmt = dialect_insert(self._conn, aggregate_sequences).values(
            aggregate_type=aggregate_type, aggregate_id=aggregate_id, last_sequence=1
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["aggregate_type", "aggregate_id"],
            set_={"last_sequence": aggregate_sequences.c.last_sequence + 1},
        ).returning(aggregate_sequences.c.last_sequence)
        return int((await self._conn.execute(stmt)).scalar_one())

    async def add(self, event: NewEvent, *, traceparent: str | None = None) -> EventEnvelope:
        """Validate and write `event`; returns it with its per-aggregate sequence.

        Raises:
            UnknownEventType, EventSchemaViolation: from the SchemaRegistry; nothing written.
        """
        self._registry.validate(event.event_type, event.schema_version, event.payload)
        traceparent = traceparent or tracing.current_traceparent()  # the relay continues it
        sequence = await self._next_sequence(event.aggregate_type, event.aggregate_id)
        envelope = EventEnvelope(
            event_id=event.event_id,
            event_type=event.event_type,
            schema_version=event.schema_version,
            occurred_at=event.occurred_at,
            trace_id=event.trace_id or tracing.current_trace_id(),
            agent_id=event.agent_id,
            tenant_id=event.tenant_id,
            aggregate_type=event.aggregate_type,
            aggregate_id=event.aggregate_id,
            sequence=sequence,
            payload=event.payload,
        )
        await self._conn.execute(
            insert(outbox).values(
                event_id=envelope.event_id,
                event_type=envelope.event_type,
                schema_version=envelope.schema_version,
                aggregate_type=envelope.aggregate_type,
                aggregate_id=envelope.aggregate_id,
                sequence=sequence,
                tenant_id=envelope.tenant_id,
                agent_id=envelope.agent_id,
                trace_id=envelope.trace_id,
                traceparent=traceparent,
                occurred_at=envelope.occurred_at,
                payload=envelope.payload,
                state=OutboxState.OUTBOX_WRITTEN,
                next_attempt_at=envelope.occurred_at,
            )
        )
        self.written += 1
        return envelope

    async def unpublished(self, aggregate_type: str, aggregate_id: str) -> int:
        """How many events of the aggregate are not yet Published (still OutboxWritten)."""
        query = select(func.count()).where(
            outbox.c.aggregate_type == aggregate_type,
            outbox.c.aggregate_id == aggregate_id,
            outbox.c.state == OutboxState.OUTBOX_WRITTEN,
        )
        return int((await self._conn.execute(query)).scalar_one())


class AuditRepository:
    """The append-only audit trail: who did what to which resource, and the event it made."""

    def __init__(self, conn: AsyncConnection, principal: str) -> None:
        self._conn = conn
        self._principal = principal

    async def record(
        self,
        action: str,
        resource: str,
        *,
        tenant: str | None = None,
        event_id: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Append one entry (`action` like `tenant.create`, `resource` like `tenants/t1`)."""
        await self._conn.execute(
            insert(audit_log).values(
                occurred_at=utcnow(),
                principal=self._principal,
                tenant=tenant,
                action=action,
                resource=resource,
                event_id=event_id,
                details=dict(details or {}),
            )
        )
