"""The outbox as a consumer sees it: the dedupe inbox (table `inbox`) that makes a handler
run once per `(consumer, event_id)`, and the dead letters of events a consumer gave up on
(architecture/data-layer.md)."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from controlplane.data.dialect import dialect_insert
from controlplane.data.outbox.relay_store import OutboxRow, outbox_row, write_dead_letter
from controlplane.data.tables import inbox, outbox
from controlplane.domain.events.envelope import OutboxState, utcnow


class Inbox:
    """A consumer's records: which events it processed, and which it dead-lettered."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @staticmethod
    async def record_delivery(conn: AsyncConnection, consumer: str, event_id: str) -> bool:
        """In the consumer's transaction: remember `event_id` in the inbox and mark the event
        Acknowledged. Returns False if this consumer had already processed it (a duplicate)."""
        stmt = (
            dialect_insert(conn, inbox)
            .values(consumer=consumer, event_id=event_id, received_at=utcnow())
            .on_conflict_do_nothing(index_elements=["consumer", "event_id"])
        )
        if (await conn.execute(stmt)).rowcount == 0:
            return False
        # The relay may not have recorded the publish yet (the broker acked, the relay's
        # update is in flight): a delivered event is at least Published either way.
        await conn.execute(
            update(outbox)
            .where(
                outbox.c.event_id == event_id,
                outbox.c.state.in_([OutboxState.OUTBOX_WRITTEN, OutboxState.PUBLISHED]),
            )
            .values(state=OutboxState.ACKNOWLEDGED, acknowledged_at=utcnow())
        )
        return True

    async def row_by_event_id(self, event_id: str) -> OutboxRow | None:
        """The outbox row of `event_id`, or None."""
        async with self._engine.connect() as conn:
            r = (await conn.execute(select(outbox).where(outbox.c.event_id == event_id))).first()
        return None if r is None else outbox_row(r)

    async def dead_letter_event(self, row: OutboxRow, reason: str, source: str) -> None:
        """Dead-letter an event a consumer could not handle (table row; outbox state);
        `source` is `consumer:<name>`."""
        async with self._engine.begin() as conn:
            await write_dead_letter(conn, row, reason, source, utcnow())
