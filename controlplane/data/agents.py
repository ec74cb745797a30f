"""AgentRepository: agents and their transition history, on the UnitOfWork's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from controlplane.data.tables import agent_transitions, agents
from controlplane.domain.agent import AgentSpec, AgentStatus
from controlplane.domain.errors import AgentNotFound, AlreadyExists, Conflict
from controlplane.domain.events import as_utc, utcnow
from controlplane.domain.records import AgentRecord


def to_record(row: Any) -> AgentRecord:
    return AgentRecord(
        id=row.id,
        tenant=row.tenant,
        name=row.name,
        labels=dict(row.labels),
        annotations=dict(row.annotations),
        spec=AgentSpec.model_validate(row.spec),
        status=AgentStatus.model_validate(row.status),
        generation=row.generation,
        resource_version=row.resource_version,
        created_at=as_utc(row.created_at),
        deletion_requested_at=(
            as_utc(row.deletion_requested_at) if row.deletion_requested_at else None
        ),
    )


class AgentRepository:
    """Agents of every tenant. Writes check `resource_version` (optimistic concurrency)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def find(self, tenant: str, name: str) -> AgentRecord | None:
        row = (
            await self._conn.execute(
                select(agents).where(agents.c.tenant == tenant, agents.c.name == name)
            )
        ).first()
        return to_record(row) if row else None

    async def get(self, tenant: str, name: str) -> AgentRecord:
        """Raises AgentNotFound."""
        found = await self.find(tenant, name)
        if found is None:
            raise AgentNotFound(f"agent {name!r} not found in tenant {tenant!r}")
        return found

    async def by_id(self, agent_id: str, *, for_update: bool = False) -> AgentRecord | None:
        query = select(agents).where(agents.c.id == agent_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._conn.execute(query)).first()
        return to_record(row) if row else None

    async def list(self, tenant: str | None = None) -> list[AgentRecord]:
        query = select(agents).order_by(agents.c.tenant, agents.c.name)
        if tenant is not None:
            query = query.where(agents.c.tenant == tenant)
        return [to_record(r) for r in await self._conn.execute(query)]

    async def add(
        self,
        agent_id: str,
        tenant: str,
        name: str,
        labels: dict[str, str],
        annotations: dict[str, str],
        spec: AgentSpec,
        status: AgentStatus,
    ) -> AgentRecord:
        now = utcnow()
        try:
            await self._conn.execute(
                insert(agents).values(
                    id=agent_id,
                    tenant=tenant,
                    name=name,
                    labels=labels,
                    annotations=annotations,
                    spec=spec.model_dump(mode="json", by_alias=True),
                    status=status.model_dump(mode="json"),
                    phase=status.phase,
                    created_at=now,
                    updated_at=now,
                )
            )
        except IntegrityError:
            raise AlreadyExists(f"agent {name!r} already exists in tenant {tenant!r}") from None
        return AgentRecord(
            agent_id, tenant, name, labels, annotations, spec, status, 1, 1, now, None
        )

    async def save(
        self,
        record: AgentRecord,
        *,
        spec: AgentSpec | None = None,
        status: AgentStatus | None = None,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        bump_generation: bool = False,
        deletion_requested: bool = False,
    ) -> AgentRecord:
        """Write changes if `record.resource_version` is still current.

        Raises Conflict when another writer got there first.
        """
        values: dict[str, Any] = {
            "resource_version": record.resource_version + 1,
            "updated_at": utcnow(),
        }
        if spec is not None:
            values["spec"] = spec.model_dump(mode="json", by_alias=True)
        if status is not None:
            values["status"] = status.model_dump(mode="json")
            values["phase"] = status.phase
        if labels is not None:
            values["labels"] = labels
        if annotations is not None:
            values["annotations"] = annotations
        if bump_generation:
            values["generation"] = record.generation + 1
        if deletion_requested:
            values["deletion_requested_at"] = record.deletion_requested_at or utcnow()
        result = await self._conn.execute(
            update(agents)
            .where(agents.c.id == record.id, agents.c.resource_version == record.resource_version)
            .values(**values)
        )
        if result.rowcount != 1:
            raise Conflict(
                f"agent {record.name!r} was modified concurrently "
                f"(resourceVersion {record.resource_version} is stale)"
            )
        fresh = await self.by_id(record.id)
        assert fresh is not None
        return fresh

    async def remove(self, record: AgentRecord) -> None:
        await self._conn.execute(delete(agents).where(agents.c.id == record.id))

    async def add_transition(
        self,
        record: AgentRecord,
        from_phase: str | None,
        to_phase: str,
        reason: str,
        message: str,
        event_id: str | None,
    ) -> None:
        await self._conn.execute(
            insert(agent_transitions).values(
                agent_id=record.id,
                tenant=record.tenant,
                from_phase=from_phase,
                to_phase=to_phase,
                reason=reason,
                message=message,
                event_id=event_id,
                occurred_at=utcnow(),
            )
        )

    async def transitions(self, agent_id: str) -> Sequence[dict[str, Any]]:
        rows = await self._conn.execute(
            select(agent_transitions)
            .where(agent_transitions.c.agent_id == agent_id)
            .order_by(agent_transitions.c.id)
        )
        return [dict(r._mapping) for r in rows]
