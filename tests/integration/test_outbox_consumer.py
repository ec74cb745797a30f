"""The consumer helper on real NATS and PostgreSQL: ack, inbox dedupe, poison → dead letter
→ requeue → delivered (adr/0003-outbox-relay-design.md)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from controlplane.data.outbox.admin import OutboxAdmin
from controlplane.data.tables import inbox, outbox
from controlplane.domain.events.envelope import EventEnvelope, OutboxState
from controlplane.messaging.consumer import EventConsumer
from controlplane.messaging.relay import Relay, RelayConfig
from controlplane.messaging.streams import DLQ_STREAM
from tests.integration.outbox_helpers import eventually, states, stream_messages, write_events
from tests.integration.test_outbox_relay import running

pytestmark = [pytest.mark.postgres, pytest.mark.nats]

RELAY = RelayConfig(poll_interval_s=0.1, lease_s=5)


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "controlplane.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


class Recorder:
    """A consumer handler that records what it saw; it can be told to fail for some events."""

    def __init__(self, poison: set[str] | None = None) -> None:
        self.poison = poison or set()
        self.seen: list[str] = []
        self.attempts: dict[str, int] = {}

    async def __call__(self, envelope: EventEnvelope, conn: AsyncConnection) -> None:
        self.attempts[envelope.event_id] = self.attempts.get(envelope.event_id, 0) + 1
        if envelope.event_id in self.poison:
            raise RuntimeError("cannot handle this event")
        self.seen.append(envelope.event_id)


@pytest.fixture
async def relay(pg_engine: AsyncEngine, pg_url: str, nc: NATS) -> AsyncIterator[Relay]:
    relay = Relay(pg_engine, pg_url, nc, RELAY)
    async with running(relay):
        yield relay


async def consume(
    nc: NATS, engine: AsyncEngine, handler: Recorder, name: str = "test-consumer"
) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    consumer = EventConsumer(nc, engine, name, handler, max_deliver=3, nak_delay_s=0.05)
    return stop, asyncio.create_task(consumer.run(stop))


async def test_consumer_acknowledges_each_event_once_and_marks_it_acknowledged(
    pg_engine: AsyncEngine, nc: NATS, relay: Relay
) -> None:
    written = await write_events(pg_engine, aggregates=4, per_aggregate=3)
    handler = Recorder()
    stop, task = await consume(nc, pg_engine, handler)
    try:
        await eventually(
            lambda: _count(pg_engine, OutboxState.ACKNOWLEDGED, len(written)), what="all acked"
        )
    finally:
        stop.set()
        await task
    assert sorted(handler.seen) == sorted(e.event_id for e in written)
    async with pg_engine.connect() as conn:
        rows = (await conn.execute(select(outbox.c.acknowledged_at))).scalars().all()
        inbox_ids = (await conn.execute(select(inbox.c.event_id))).scalars().all()
    assert all(rows) and sorted(inbox_ids) == sorted(handler.seen)


async def test_a_redelivered_event_is_deduplicated_by_event_id(
    pg_engine: AsyncEngine, pg_url: str, nc: NATS, relay: Relay
) -> None:
    [event] = await write_events(pg_engine, aggregates=1, per_aggregate=1)
    handler = Recorder()
    stop, task = await consume(nc, pg_engine, handler)
    try:
        await eventually(lambda: _count(pg_engine, OutboxState.ACKNOWLEDGED, 1), what="acked")
        # Replay sends the same event again (a new Nats-Msg-Id, the same event_id).
        assert await OutboxAdmin(pg_engine).replay(aggregate=f"tenant/{event.aggregate_id}") == 1
        await eventually(lambda: _stream_count(nc, 2), what="replayed copy in the stream")
        await eventually(lambda: _consumer_done(nc, "test-consumer"), what="copy delivered")
    finally:
        stop.set()
        await task
    messages = await stream_messages(nc.jetstream())
    assert [m["envelope"]["event_id"] for m in messages] == [event.event_id] * 2
    assert [m["msg_id"] for m in messages] == [event.event_id, f"{event.event_id}.r1"]
    assert handler.seen == [event.event_id], "the handler ran once"


async def test_poison_event_is_dead_lettered_listed_requeued_and_delivered_once_fixed(
    pg_engine: AsyncEngine, nc: NATS, relay: Relay, agentos_env: dict[str, str]
) -> None:
    written = await write_events(pg_engine, aggregates=3, per_aggregate=1)
    poison = written[1].event_id
    handler = Recorder(poison={poison})
    stop, task = await consume(nc, pg_engine, handler)
    try:
        await eventually(
            lambda: _count(pg_engine, OutboxState.DEAD_LETTERED, 1),
            what="poison event dead-lettered",
        )
    finally:
        stop.set()
        await task
    assert handler.attempts[poison] == 3, "max deliveries"
    listed = json.loads(cli(agentos_env, "outbox", "dlq", "list", "-o", "json"))
    assert [d["event_id"] for d in listed] == [poison]
    assert listed[0]["source"] == "consumer:test-consumer"
    assert "3 deliveries" in listed[0]["reason"]
    dlq = await nc.jetstream().stream_info(DLQ_STREAM)
    assert dlq.state.messages == 1

    assert "1 dead letters requeued" in cli(agentos_env, "outbox", "dlq", "requeue", poison)
    handler.poison.clear()  # the consumer is fixed
    stop, task = await consume(nc, pg_engine, handler)
    try:
        await eventually(lambda: _count(pg_engine, OutboxState.ACKNOWLEDGED, 3), what="delivered")
    finally:
        stop.set()
        await task
    assert handler.seen.count(poison) == 1
    assert json.loads(cli(agentos_env, "outbox", "dlq", "list", "-o", "json")) == []
    status = json.loads(cli(agentos_env, "outbox", "status", "-o", "json"))
    assert status["counts"][OutboxState.ACKNOWLEDGED] == 3
    assert status["oldest_unpublished_age_s"] is None


async def _count(engine: AsyncEngine, state: str, n: int) -> bool:
    return (await states(engine)).get(state, 0) == n


async def _stream_count(nc: NATS, n: int) -> bool:
    from controlplane.messaging.streams import EVENTS_STREAM

    return (await nc.jetstream().stream_info(EVENTS_STREAM)).state.messages == n


async def _consumer_done(nc: NATS, name: str) -> bool:
    from controlplane.messaging.streams import EVENTS_STREAM

    info = await nc.jetstream().consumer_info(EVENTS_STREAM, name)
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)
