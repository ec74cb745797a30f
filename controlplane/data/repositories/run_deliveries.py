"""The delivery state of runs (columns `dispatch_event_id`, `delivery_reply`, `delivery_seq`,
`heartbeat_at` of table `runs`): what the gateway and the run controller need to find and
acknowledge a run's JetStream delivery (architecture/runs.md)."""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from controlplane.data.outbox.relay_store import outbox_row, write_dead_letter
from controlplane.data.repositories.runs import to_record
from controlplane.data.tables import outbox, runs
from controlplane.domain.events.envelope import OutboxState, as_utc, utcnow
from controlplane.domain.runs.lifecycle import NON_TERMINAL, RunPhase
from controlplane.domain.runs.model import RunRecord

_LIVE = [str(p) for p in NON_TERMINAL]


@dataclass(frozen=True)
class HeldDelivery:
    """A run whose delivery is held by a sandbox: its ack subject, the message's stream
    sequence and the last heartbeat."""

    run: RunRecord
    reply: str
    stream_seq: int
    heartbeat_at: datetime | None


class RunDeliveryRepository:
    """Delivery columns of runs, on the UnitOfWork's connection."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def hold(self, run_id: str, reply: str, stream_seq: int) -> None:
        """The run's message is now delivered to a sandbox, acked through `reply`."""
        await self._conn.execute(
            update(runs)
            .where(runs.c.id == run_id)
            .values(delivery_reply=reply, delivery_seq=stream_seq, heartbeat_at=utcnow())
        )

    async def heartbeat(self, run_id: str) -> None:
        """The holder of the run's delivery is alive."""
        await self._conn.execute(
            update(runs).where(runs.c.id == run_id).values(heartbeat_at=utcnow())
        )

    async def release(self, run_id: str) -> None:
        """Nobody holds the run's delivery any more (acked, nak'ed or terminated)."""
        await self._conn.execute(
            update(runs)
            .where(runs.c.id == run_id)
            .values(delivery_reply=None, delivery_seq=None, heartbeat_at=None)
        )

    async def held(self, run_id: str) -> HeldDelivery | None:
        """The run's held delivery, or None."""
        row = (
            await self._conn.execute(
                select(runs).where(runs.c.id == run_id, runs.c.delivery_reply.is_not(None))
            )
        ).first()
        return self._held(row) if row else None

    async def held_by(
        self, *, terminal: bool | None = None, heartbeat_before: datetime | None = None
    ) -> builtins.list[HeldDelivery]:
        """Held deliveries of terminal runs (`terminal=True`: theirs must end), of live runs
        (`False`), or of either; with `heartbeat_before`, only those silent since then."""
        query = select(runs).where(runs.c.delivery_reply.is_not(None))
        if terminal is True:
            query = query.where(runs.c.phase.not_in(_LIVE))
        elif terminal is False:
            query = query.where(runs.c.phase.in_(_LIVE))
        if heartbeat_before is not None:
            query = query.where(runs.c.heartbeat_at < heartbeat_before)
        return [self._held(r) for r in await self._conn.execute(query)]

    async def pending_dispatch(self) -> builtins.list[tuple[RunRecord, str]]:
        """Pending runs whose dispatch event left OutboxWritten (Published, Acknowledged or
        DeadLettered), with that state (an `OutboxState` value)."""
        query = (
            select(runs, outbox.c.state.label("dispatch_state"))
            .join(outbox, outbox.c.event_id == runs.c.dispatch_event_id)
            .where(
                and_(
                    runs.c.phase == str(RunPhase.PENDING),
                    outbox.c.state != OutboxState.OUTBOX_WRITTEN,
                )
            )
        )
        return [(to_record(r), str(r.dispatch_state)) for r in await self._conn.execute(query)]

    async def live_of_agents(self, agent_ids: Iterable[str]) -> builtins.list[RunRecord]:
        """Non-terminal runs of the given agents (by uid)."""
        ids = list(agent_ids)
        if not ids:
            return []
        query = select(runs).where(runs.c.agent_id.in_(ids), runs.c.phase.in_(_LIVE))
        return [to_record(r) for r in await self._conn.execute(query)]

    async def dead_letter(self, run_id: str, reason: str, source: str) -> None:
        """List the run's dispatch message with the dead letters (`agentos outbox dlq list`):
        its deliveries are spent."""
        row = (
            await self._conn.execute(
                select(outbox)
                .join(runs, runs.c.dispatch_event_id == outbox.c.event_id)
                .where(runs.c.id == run_id)
            )
        ).first()
        if row is not None:
            await write_dead_letter(self._conn, outbox_row(row), reason, source, utcnow())

    @staticmethod
    def _held(row: Any) -> HeldDelivery:
        return HeldDelivery(
            to_record(row),
            str(row.delivery_reply),
            int(row.delivery_seq or 0),
            as_utc(row.heartbeat_at) if row.heartbeat_at else None,
        )


def run_phase_counter(engine: AsyncEngine) -> Callable[[], Awaitable[dict[RunPhase, int]]]:
    """Live runs by phase, each call on a connection of its own: the port the inventory
    gauge `agentos_runs_in_flight` reads (controlplane/observability/inventory.py)."""

    async def count() -> dict[RunPhase, int]:
        query = (
            select(runs.c.phase, func.count()).where(runs.c.phase.in_(_LIVE)).group_by(runs.c.phase)
        )
        async with engine.connect() as conn:
            return {RunPhase(p): int(n) for p, n in await conn.execute(query)}

    return count
