"""The outbox read as a change feed, for list/watch (Kubernetes API conventions).

The outbox row id is the feed's position: a watch `resourceVersion`. Ids come from a
sequence, in the order rows are *inserted*, not committed: a transaction that took id 100 may
commit after one that took 101. A reader that moved its cursor to 101 on seeing it would
skip 100 for ever. So a reader only advances to a **horizon**: an id H such that every row
with an id <= H that will ever commit has committed.

How the horizon is found (PostgreSQL). Read the highest id M of a window after the cursor and
how many rows the window holds. No hole (count = M - cursor): every id up to M is visible,
H = M. A hole: its id was taken by a transaction still open, or by one that rolled back.
Every transaction that inserted into the outbox holds a RowExclusiveLock on it until it
ends, taken before its id (the lock is acquired when the INSERT starts, the id is drawn
while it runs). The reader lists the transactions holding that lock *after* it saw M, and
waits until each of them has ended; then every id <= M is committed or never will be, and
H = M. Only transactions that were already open are waited for, so a stream of new writers
cannot starve the reader, and the wait is as long as the longest of those writers.

SQLite serialises writers (one write transaction at a time, ids drawn under the write lock),
so ids commit in order and the horizon is simply the highest id.

Retention (controlplane/data/retention.py) deletes published rows and records the highest id
it deleted in `retention_marks`; a read from a cursor below that mark may have lost events, so
it raises ResourceVersionExpired (410), as Kubernetes does.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from controlplane.data.tables import outbox, retention_marks
from controlplane.domain.errors import ResourceVersionExpired
from controlplane.domain.events.envelope import as_utc

_HOLDERS = text(
    "SELECT virtualtransaction FROM pg_locks WHERE locktype = 'relation'"
    " AND relation = 'outbox'::regclass AND mode = 'RowExclusiveLock' AND granted"
    " AND pid <> pg_backend_pid()"
)
_STILL_HOLDING = text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'relation'"
    " AND relation = 'outbox'::regclass AND mode = 'RowExclusiveLock' AND granted"
    " AND virtualtransaction = ANY(:holders)"
)


@dataclass(frozen=True)
class FeedEvent:
    """One outbox row as the feed gives it; `id` is its position (resourceVersion)."""

    id: int
    event_id: str
    event_type: str
    aggregate_type: str
    aggregate_id: str
    sequence: int
    tenant_id: str
    agent_id: str | None
    occurred_at: datetime
    payload: dict[str, Any]


class OutboxFeed:
    """Horizon and reads of the outbox (see the module docstring)."""

    def __init__(self, engine: AsyncEngine, *, window: int = 10_000) -> None:
        self._engine = engine
        self._window = window

    async def current_horizon(self) -> int:
        """The horizon now: the highest id, once every writer open when it was read has
        ended. 0 for an empty outbox."""
        async with self._engine.connect() as conn:
            top = (await conn.execute(select(func.max(outbox.c.id)))).scalar() or 0
            await self._wait_for_writers(conn)
        return int(top)

    async def horizon(self, after: int) -> int:
        """The horizon from cursor `after`, looking at most `window` rows ahead; `after`
        itself when nothing new has committed."""
        window = (
            select(outbox.c.id)
            .where(outbox.c.id > after)
            .order_by(outbox.c.id)
            .limit(self._window)
            .subquery()
        )
        async with self._engine.connect() as conn:
            top, count = (await conn.execute(select(func.max(window.c.id), func.count()))).one()
            if top is None:
                return after
            if count < top - after:
                await self._wait_for_writers(conn)
        return int(top)

    async def _wait_for_writers(self, conn: AsyncConnection) -> None:
        """Wait until every transaction now holding a write lock on the outbox has ended
        (PostgreSQL; nothing to wait for on SQLite)."""
        if conn.dialect.name != "postgresql":
            return
        holders = list((await conn.execute(_HOLDERS)).scalars())
        pause_s = 0.002
        while holders:
            if not (await conn.execute(_STILL_HOLDING, {"holders": holders})).scalar():
                return
            await asyncio.sleep(pause_s)
            pause_s = min(pause_s * 2, 0.05)

    async def read(
        self,
        after: int,
        upto: int,
        *,
        tenant: str | None,
        aggregate_type: str,
        limit: int = 1000,
    ) -> list[FeedEvent]:
        """Events of `aggregate_type` in `tenant` (None: every tenant) with `after` < id <=
        `upto`, in id order, at most `limit` (the caller continues from the last id it got).

        Raises:
            ResourceVersionExpired: retention deleted rows after `after` (410 Gone).
        """
        query = (
            select(outbox)
            .where(
                outbox.c.id > after,
                outbox.c.id <= upto,
                outbox.c.aggregate_type == aggregate_type,
            )
            .order_by(outbox.c.id)
            .limit(limit)
        )
        if tenant is not None:
            query = query.where(outbox.c.tenant_id == tenant)
        async with self._engine.connect() as conn:
            mark = select(retention_marks.c.purged_through_id).where(
                retention_marks.c.table_name == "outbox"
            )
            purged_through = (await conn.execute(mark)).scalar() or 0
            if after < purged_through:
                raise ResourceVersionExpired(
                    f"resourceVersion {after} is too old: events up to {purged_through} "
                    "were deleted by retention; list again"
                )
            rows = (await conn.execute(query)).all()
        return [
            FeedEvent(
                id=int(r.id),
                event_id=r.event_id,
                event_type=r.event_type,
                aggregate_type=r.aggregate_type,
                aggregate_id=r.aggregate_id,
                sequence=int(r.sequence),
                tenant_id=r.tenant_id,
                agent_id=r.agent_id,
                occurred_at=as_utc(r.occurred_at),
                payload=r.payload,
            )
            for r in rows
        ]
