"""Run notifications (table `run_notifications`): each run's webhook and its delivery record
(architecture/runs.md, Notify). One row per run, keyed by the run's id: however often the
notifier sees a run end, the row says whether the receiver has acknowledged it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, exists, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from controlplane.data.tables import outbox, run_notifications, runs
from controlplane.domain.events.envelope import OutboxState, utcnow
from controlplane.domain.records import StoredEvent
from controlplane.domain.runs.lifecycle import TERMINAL

_TERMINAL_EVENTS = ("run.succeeded", "run.failed", "run.canceled", "run.timed_out")
_RELAYED = (OutboxState.PUBLISHED, OutboxState.ACKNOWLEDGED)
_n = run_notifications


@dataclass(frozen=True)
class DueNotification:
    """A notification claimed for one attempt: where, how to sign, which attempt this is."""

    run_id: str
    tenant: str
    url: str
    secret: str | None
    format: str
    token: str | None
    attempt: int


class RunNotificationRepository:
    """Run notifications, on the UnitOfWork's connection."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(
        self,
        run_id: str,
        tenant: str,
        url: str,
        secret: str | None,
        *,
        format: str = "run",
        token: str | None = None,
    ) -> None:
        """The run's webhook, due as soon as the run has ended; a second one for the same
        run replaces the first (A2A's set-config), keeping its delivery record."""
        now = utcnow()
        found = await self._conn.execute(select(_n.c.run_id).where(_n.c.run_id == run_id))
        values = {"url": url, "secret": secret, "format": format, "token": token}
        if found.first() is not None:
            await self._conn.execute(update(_n).where(_n.c.run_id == run_id).values(**values))
            return
        await self._conn.execute(
            _n.insert().values(run_id=run_id, tenant=tenant, due_at=now, created_at=now, **values)
        )

    async def claim(self, now: datetime, lease_s: float, limit: int) -> list[DueNotification]:
        """Up to `limit` notifications to attempt now: not delivered, not given up, due, of a
        run that has ended whose terminal event the relay has published. Each is leased (its
        `due_at` moved `lease_s` ahead, `attempts` + 1), so another notifier skips it and a
        notifier that dies mid-call leaves it due again after the lease."""
        relayed = exists().where(
            outbox.c.aggregate_type == "run",
            outbox.c.aggregate_id == _n.c.run_id,
            outbox.c.event_type.in_(_TERMINAL_EVENTS),
            outbox.c.state.in_(_RELAYED),
        )
        query = (
            select(_n)
            .join(runs, runs.c.id == _n.c.run_id)
            .where(
                _n.c.delivered_at.is_(None),
                _n.c.gave_up_at.is_(None),
                _n.c.due_at <= now,
                runs.c.phase.in_([str(p) for p in TERMINAL]),
                relayed,
            )
            .order_by(_n.c.due_at)
            .limit(limit)
            .with_for_update(of=_n, skip_locked=True)
        )
        rows = (await self._conn.execute(query)).all()
        claimed = []
        for r in rows:
            await self._conn.execute(
                update(_n)
                .where(_n.c.run_id == r.run_id)
                .values(due_at=now + timedelta(seconds=lease_s), attempts=r.attempts + 1)
            )
            claimed.append(
                DueNotification(
                    r.run_id, r.tenant, r.url, r.secret, r.format, r.token, r.attempts + 1
                )
            )
        return claimed

    async def url_of(self, run_id: str, format: str) -> str | None:
        """The URL of the run's notification in `format`, or None."""
        r = await self._conn.execute(
            select(_n.c.url).where(_n.c.run_id == run_id, _n.c.format == format)
        )
        return r.scalar_one_or_none()

    async def terminal_event(self, run_id: str) -> StoredEvent | None:
        """The run's terminal event (`run.succeeded`, ...), or None."""
        r = (
            await self._conn.execute(
                select(outbox).where(
                    and_(
                        outbox.c.aggregate_type == "run",
                        outbox.c.aggregate_id == run_id,
                        outbox.c.event_type.in_(_TERMINAL_EVENTS),
                    )
                )
            )
        ).first()
        if r is None:
            return None
        return StoredEvent(
            event_id=r.event_id,
            event_type=r.event_type,
            sequence=r.sequence,
            occurred_at=r.occurred_at,
            state=r.state,
            payload=r.payload,
        )

    async def delivered(self, run_id: str) -> None:
        """The receiver answered 2xx: never again."""
        await self._conn.execute(
            update(_n).where(_n.c.run_id == run_id).values(delivered_at=utcnow(), last_error=None)
        )

    async def retry(self, run_id: str, due_at: datetime, error: str) -> None:
        """The attempt failed: try again at `due_at`."""
        await self._conn.execute(
            update(_n).where(_n.c.run_id == run_id).values(due_at=due_at, last_error=error[:1000])
        )

    async def give_up(self, run_id: str, error: str) -> None:
        """Never to be delivered (a refused address, or out of attempts)."""
        await self._conn.execute(
            update(_n)
            .where(_n.c.run_id == run_id)
            .values(gave_up_at=utcnow(), last_error=error[:1000])
        )
