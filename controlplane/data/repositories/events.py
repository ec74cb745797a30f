"""An aggregate's history as the outbox holds it: its events by sequence, with each one's
delivery state (table `outbox`, read in a UnitOfWork)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from controlplane.data.tables import outbox
from controlplane.domain.records import StoredEvent


class EventRepository:
    """Reads the events written for one aggregate; writing is the OutboxWriter's."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def of_aggregate(
        self,
        aggregate_type: str,
        aggregate_id: str,
        *,
        after_sequence: int = 0,
        limit: int | None = None,
        exclude_types: Iterable[str] = (),
    ) -> list[StoredEvent]:
        """Events of the aggregate (`agent`, its id) with a sequence above `after_sequence`,
        in sequence order, oldest first, at most `limit`, none of `exclude_types`.

        Writers of one aggregate are serialised (the outbox writer locks its sequence row),
        so sequences commit in order: a reader resuming after the last sequence it saw
        misses none."""
        query = (
            select(outbox)
            .where(
                outbox.c.aggregate_type == aggregate_type,
                outbox.c.aggregate_id == aggregate_id,
                outbox.c.sequence > after_sequence,
            )
            .order_by(outbox.c.sequence)
        )
        excluded = list(exclude_types)
        if excluded:
            query = query.where(outbox.c.event_type.not_in(excluded))
        if limit is not None:
            query = query.limit(limit)
        rows = await self._conn.execute(query)
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
