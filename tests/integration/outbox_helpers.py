"""Helpers shared by the outbox tests: write events, read the stream back, wait for states."""

from __future__ import annotations

import json

from nats.js import JetStreamContext
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.bootstrap import schema_registry
from controlplane.data.tables import outbox
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.events.envelope import EventEnvelope, NewEvent
from controlplane.messaging.streams import EVENTS_STREAM
from harness.waiting import eventually

__all__ = ["eventually", "quota_event", "states", "stream_messages", "write_events"]


def quota_event(tenant: str, agents: int) -> NewEvent:
    return NewEvent(
        event_type="tenant.quota_changed",
        aggregate_type="tenant",
        aggregate_id=tenant,
        tenant_id=tenant,
        payload={"name": tenant, "quota": {"agents": agents}},
    )


async def write_events(
    engine: AsyncEngine, aggregates: int, per_aggregate: int, prefix: str = "t"
) -> list[EventEnvelope]:
    """Commit `per_aggregate` events for each of `aggregates` tenants, one transaction each."""
    written: list[EventEnvelope] = []
    for k in range(per_aggregate):
        for i in range(aggregates):
            async with UnitOfWork(engine, schema_registry()) as uow:
                written.append(await uow.outbox.add(quota_event(f"{prefix}{i}", k)))
                await uow.commit()
    return written


async def states(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(outbox.c.state, func.count()).group_by(outbox.c.state))
        return {state: n for state, n in rows}


async def stream_messages(js: JetStreamContext, stream: str = EVENTS_STREAM) -> list[dict]:
    """Every message in `stream`, in stream order, as {seq, msg_id, envelope}."""
    info = await js.stream_info(stream)
    result = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        if info.state.messages == 0:
            break
        msg = await js.get_msg(stream, seq)
        result.append(
            {
                "seq": seq,
                "msg_id": (msg.headers or {}).get("Nats-Msg-Id"),
                "envelope": json.loads(msg.data or b"{}"),
            }
        )
    return result
