"""Repositories: the only place the service layer's SQL lives.

Each works on the open transaction (an AsyncConnection) of a UnitOfWork; none commits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from controlplane.data.tables import aggregate_sequences, audit_log, outbox, tenants
from controlplane.domain.errors import AlreadyExists, Conflict, TenantNotEmpty, TenantNotFound
from controlplane.domain.events.envelope import EventEnvelope, NewEvent, OutboxState, utcnow
from controlplane.domain.events.registry import SchemaRegistry
from controlplane.observability import tracing


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


class OutboxWriter:
    """Writes events to the outbox in the caller's transaction (the transactional outbox).

    The payload is checked against the SchemaRegistry first: a bad payload raises before
    anything is written, and the UnitOfWork rolls the whole change back.
    """

    def __init__(self, conn: AsyncConnection, registry: SchemaRegistry) -> None:
        self._conn = conn
        self._registry = registry
        self.written = 0

    async def _reserve_sequences(
        self, counts: dict[tuple[str, str], int]
    ) -> dict[tuple[str, str], int]:
        """Advance each aggregate's sequence by its count; returns each new last sequence.

        The upsert locks the aggregates' rows until commit: writers of one aggregate are
        serialised, so sequences are gapless and commit in order (a rollback undoes both).
        Keys are sorted so two batches lock rows in the same order (no deadlock).
        """
        stmt = dialect_insert(self._conn, aggregate_sequences).values(
            [
                {"aggregate_type": t, "aggregate_id": i, "last_sequence": n}
                for (t, i), n in sorted(counts.items())
            ]
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["aggregate_type", "aggregate_id"],
            set_={
                "last_sequence": aggregate_sequences.c.last_sequence + stmt.excluded.last_sequence
            },
        ).returning(
            aggregate_sequences.c.aggregate_type,
            aggregate_sequences.c.aggregate_id,
            aggregate_sequences.c.last_sequence,
        )
        return {(t, i): int(last) for t, i, last in await self._conn.execute(stmt)}

    async def add(self, event: NewEvent, *, traceparent: str | None = None) -> EventEnvelope:
        """Validate and write `event`; returns it with its per-aggregate sequence.

        Raises:
            UnknownEventType, EventSchemaViolation: from the SchemaRegistry; nothing written.
        """
        return (await self.add_many([event], traceparent=traceparent))[0]

    async def add_many(
        self, events: list[NewEvent], *, traceparent: str | None = None
    ) -> list[EventEnvelope]:
        """Validate and write `events` (in order within each aggregate) in one round of
        statements; returns them with their sequences. Raises as `add`, before writing."""
        for event in events:
            self._registry.validate(event.event_type, event.schema_version, event.payload)
        if not events:
            return []
        traceparent = traceparent or tracing.current_traceparent()  # the relay continues it
        trace_id = tracing.current_trace_id()
        counts: dict[tuple[str, str], int] = {}
        for event in events:
            key = (event.aggregate_type, event.aggregate_id)
            counts[key] = counts.get(key, 0) + 1
        last = await self._reserve_sequences(counts)
        next_sequence = {key: last[key] - n + 1 for key, n in counts.items()}
        envelopes = []
        for event in events:
            key = (event.aggregate_type, event.aggregate_id)
            sequence = next_sequence[key]
            next_sequence[key] = sequence + 1
            envelopes.append(
                EventEnvelope(
                    event_id=event.event_id,
                    event_type=event.event_type,
                    schema_version=event.schema_version,
                    occurred_at=event.occurred_at,
                    trace_id=event.trace_id or trace_id,
                    agent_id=event.agent_id,
                    tenant_id=event.tenant_id,
                    aggregate_type=event.aggregate_type,
                    aggregate_id=event.aggregate_id,
                    sequence=sequence,
                    payload=event.payload,
                )
            )
        await self._conn.execute(
            insert(outbox),
            [
                {
                    "event_id": e.event_id,
                    "event_type": e.event_type,
                    "schema_version": e.schema_version,
                    "aggregate_type": e.aggregate_type,
                    "aggregate_id": e.aggregate_id,
                    "sequence": e.sequence,
                    "tenant_id": e.tenant_id,
                    "agent_id": e.agent_id,
                    "trace_id": e.trace_id,
                    "traceparent": traceparent,
                    "occurred_at": e.occurred_at,
                    "payload": e.payload,
                    "state": OutboxState.OUTBOX_WRITTEN,
                    "next_attempt_at": e.occurred_at,
                }
                for e in envelopes
            ],
        )
        self.written += len(envelopes)
        return envelopes

    async def unpublished_by_aggregate(
        self, aggregate_type: str, aggregate_ids: list[str]
    ) -> dict[str, int]:
        """How many events of each aggregate are not yet Published; absent ids have none."""
        query = (
            select(outbox.c.aggregate_id, func.count())
            .where(
                outbox.c.aggregate_type == aggregate_type,
                outbox.c.aggregate_id.in_(aggregate_ids),
                outbox.c.state == OutboxState.OUTBOX_WRITTEN,
            )
            .group_by(outbox.c.aggregate_id)
        )
        return {i: int(n) for i, n in await self._conn.execute(query)}


@dataclass(frozen=True)
class AuditEntry:
    """One audit entry to append (see AuditRepository.record)."""

    action: str
    resource: str
    tenant: str | None = None
    event_id: str | None = None
    details: Mapping[str, Any] | None = None


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
        await self.record_many([AuditEntry(action, resource, tenant, event_id, details)])

    async def record_many(self, entries: list[AuditEntry]) -> None:
        """Append entries in one statement."""
        if not entries:
            return
        now = utcnow()
        await self._conn.execute(
            insert(audit_log),
            [
                {
                    "occurred_at": now,
                    "principal": self._principal,
                    "tenant": e.tenant,
                    "action": e.action,
                    "resource": e.resource,
                    "event_id": e.event_id,
                    "details": dict(e.details or {}),
                }
                for e in entries
            ],
        )
