"""The outbox as its operators see it: status, replay and dead letters — what
`agentos outbox ...` and `/api/v1/admin/outbox` do (architecture/state-machines.md).

Errors are the catalogue's (controlplane/domain/errors.py): the CLI prints them, the REST
routes answer them as problem+json.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from controlplane.data.tables import dead_letters, outbox
from controlplane.domain.errors import NotFound, ValidationFailed
from controlplane.domain.events.envelope import OutboxState, as_utc, utcnow


@dataclass(frozen=True)
class OutboxStatus:
    """Counts per state and the age of the oldest unpublished event (seconds, or None)."""

    counts: dict[str, int]
    oldest_unpublished_age_s: float | None
    dead_letters_open: int


class OutboxAdmin:
    """Reads and repairs the outbox as a whole; each call is its own transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def status(self) -> OutboxStatus:
        """Counts per state, the oldest unpublished event's age, and open dead letters."""
        async with self._engine.connect() as conn:
            counts = {state: 0 for state in OutboxState.ALL}
            for state, n in await conn.execute(
                select(outbox.c.state, func.count()).group_by(outbox.c.state)
            ):
                counts[state] = n
            oldest = (
                await conn.execute(
                    select(func.min(outbox.c.occurred_at)).where(
                        outbox.c.state == OutboxState.OUTBOX_WRITTEN
                    )
                )
            ).scalar()
            open_dead = (
                await conn.execute(
                    select(func.count())
                    .select_from(dead_letters)
                    .where(dead_letters.c.requeued_at.is_(None))
                )
            ).scalar_one()
        age = (utcnow() - as_utc(oldest)).total_seconds() if oldest else None
        return OutboxStatus(counts, age, int(open_dead))

    async def replay(
        self,
        *,
        from_id: str | None = None,
        since: datetime | None = None,
        aggregate: str | None = None,
    ) -> int:
        """Send already published events again; they keep their `event_id`.

        Exactly one selector: `from_id` (that event and every later one, by outbox order),
        `since` (events that occurred at or after the time), or `aggregate` (`TYPE/ID` or an
        aggregate id of any type). Returns how many events were queued.

        Raises:
            ValidationFailed: not exactly one selector.
            NotFound: `from_id` is not in the outbox.
        """
        chosen = [x for x in (from_id, since, aggregate) if x is not None]
        if len(chosen) != 1:
            raise ValidationFailed("give exactly one replay selector: from_id, since or aggregate")
        cond: ColumnElement[bool] = outbox.c.state.in_(
            [OutboxState.PUBLISHED, OutboxState.ACKNOWLEDGED]
        )
        async with self._engine.begin() as conn:
            if from_id is not None:
                start = (
                    await conn.execute(select(outbox.c.id).where(outbox.c.event_id == from_id))
                ).scalar()
                if start is None:
                    raise NotFound(f"no event with id {from_id!r} in the outbox")
                cond = and_(cond, outbox.c.id >= start)
            elif since is not None:
                cond = and_(cond, outbox.c.occurred_at >= since)
            else:
                assert aggregate is not None
                kind, _, ident = aggregate.rpartition("/")
                cond = and_(cond, outbox.c.aggregate_id == ident)
                if kind:
                    cond = and_(cond, outbox.c.aggregate_type == kind)
            result = await conn.execute(
                update(outbox)
                .where(cond)
                .values(
                    state=OutboxState.OUTBOX_WRITTEN,
                    replay_count=outbox.c.replay_count + 1,
                    attempts=0,
                    next_attempt_at=utcnow(),
                    last_error=None,
                )
            )
        return int(result.rowcount)

    async def dead_letters(self, *, include_requeued: bool = False) -> list[dict[str, Any]]:
        """Dead letters, oldest first: event id, source, reason, attempts, times, envelope."""
        query = select(dead_letters).order_by(dead_letters.c.id)
        if not include_requeued:
            query = query.where(dead_letters.c.requeued_at.is_(None))
        async with self._engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(query)]

    async def requeue(self, event_id: str | None = None) -> int:
        """Put dead-lettered events back in the outbox (one by id, or all when None).

        They keep their `event_id`; `replay_count` grows so JetStream does not drop them as
        duplicates. Returns how many were requeued. Raises NotFound: `event_id` has no open
        dead letter.
        """
        now = utcnow()
        async with self._engine.begin() as conn:
            query = select(dead_letters.c.event_id).where(dead_letters.c.requeued_at.is_(None))
            if event_id is not None:
                query = query.where(dead_letters.c.event_id == event_id)
            ids = list((await conn.execute(query)).scalars())
            if event_id is not None and not ids:
                raise NotFound(f"no open dead letter for event {event_id!r}")
            if not ids:
                return 0
            await conn.execute(
                update(outbox)
                .where(outbox.c.event_id.in_(ids))
                .values(
                    state=OutboxState.OUTBOX_WRITTEN,
                    replay_count=outbox.c.replay_count + 1,
                    attempts=0,
                    next_attempt_at=now,
                    last_error=None,
                )
            )
            # A consumer that dead-lettered the event may have an inbox row from a partial
            # attempt only if it committed; it did not (it failed), so nothing to clear.
            await conn.execute(
                update(dead_letters).where(dead_letters.c.event_id.in_(ids)).values(requeued_at=now)
            )
        return len(ids)
