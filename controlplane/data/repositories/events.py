"""An aggregate's history as the outbox holds it: its events by sequence, with each one's
delivery state (table `outbox`, read in a UnitOfWork)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from controlplane.data.tables import outbox
from controlplane.domain.records import StoredEvent


class EventRepository:
    """Reads the events written for one aggregate; writing is the OutboxWriter's."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def of_aggregate(self, aggregate_type: str, aggregate_id: str) -> list[StoredEvent]:
        """Every event of the aggregate (`agent`, its id), in sequence order, oldest first."""
        rows = await self._conn.execute(
            select(outbox)
            .where(outbox.c.aggregate_type == aggregate_type, outbox.c.aggregate_id == aggregate_id)
            .order_by(outbox.c.sequence)
        )
        return [
            StoredEvent(
                event_id=r.event_id,
                event_type=r.event_type,
                sequence=r.sequence,
                occurred_at=r.occurred_at,
                state=r.state,
                payload=r.payload,
            )
            for r in rows
        ]
