"""The relay on real PostgreSQL and NATS JetStream (adr/0003-outbox-relay-design.md)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

import nats
import pytest
from nats.aio.client import Client as NATS
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.bootstrap import schema_registry
from controlplane.data.tables import outbox
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.events.envelope import OutboxState
from controlplane.messaging.relay import Relay, RelayConfig
from harness.nats import PrivateNats
from tests.integration.outbox_helpers import (
    eventually,
    quota_event,
    states,
    stream_messages,
    write_events,
)

pytestmark = [pytest.mark.postgres, pytest.mark.nats]

FAST = RelayConfig(
    batch_size=64,
    poll_interval_s=0.2,
    lease_s=5.0,
    publish_timeout_s=2.0,
    backoff_base_s=0.05,
    backoff_max_s=0.5,
)


@contextlib.asynccontextmanager
async def running(relay: Relay):
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield relay
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def assert_exactly_once_in_order(messages: list[dict], written: list) -> None:
    ids = [m["envelope"]["event_id"] for m in messages]
    assert sorted(ids) == sorted(e.event_id for e in written), "every event once, no extra"
    assert all(m["msg_id"] == m["envelope"]["event_id"] for m in messages), "Nats-Msg-Id"
    per_aggregate: dict[str, list[int]] = defaultdict(list)
    for m in messages:
        per_aggregate[m["envelope"]["aggregate_id"]].append(m["envelope"]["sequence"])
    for aggregate, seqs in per_aggregate.items():
        assert seqs == sorted(seqs), f"order of {aggregate}: {seqs}"


async def test_relay_publishes_every_event_once_in_order_per_aggregate(
    pg_engine: AsyncEngine, pg_url: str, nc: NATS
) -> None:
    written = await write_events(pg_engine, aggregates=20, per_aggregate=5)
    relay = Relay(pg_engine, pg_url, nc, FAST)
    async with running(relay):
        await eventually(
            lambda: _all_in(pg_engine, OutboxState.PUBLISHED, len(written)), what="all published"
        )
    messages = await stream_messages(nc.jetstream())
    assert_exactly_once_in_order(messages, written)
    assert messages[0]["envelope"]["event_type"] == "tenant.quota_changed"
    assert set(messages[0]["envelope"]) >= {
        "event_id",
        "event_type",
        "schema_version",
        "occurred_at",
        "trace_id",
        "agent_id",
        "tenant_id",
        "aggregate_type",
        "aggregate_id",
        "sequence",
        "payload",
    }


async def test_relay_wakes_on_notify_for_a_new_commit(
    pg_engine: AsyncEngine, pg_url: str, nc: NATS
) -> None:
    # A long poll interval: only LISTEN/NOTIFY can make the event go out quickly.
    relay = Relay(pg_engine, pg_url, nc, RelayConfig(poll_interval_s=3600, lease_s=5))
    async with running(relay):
        await eventually(lambda: _listening(pg_engine), what="relay listening")
        [event] = await write_events(pg_engine, aggregates=1, per_aggregate=1)
        await eventually(
            lambda: _all_in(pg_engine, OutboxState.PUBLISHED, 1),
            timeout_s=20,
            what="published after NOTIFY",
        )
    [message] = await stream_messages(nc.jetstream())
    assert message["envelope"]["event_id"] == event.event_id


async def test_two_relays_share_the_outbox_without_publishing_any_event_twice(
    pg_engine: AsyncEngine, pg_url: str, nc: NATS, nats_url: str
) -> None:
    written = await write_events(pg_engine, aggregates=100, per_aggregate=4)
    nc2 = await nats.connect(nats_url)
    config = RelayConfig(batch_size=8, per_aggregate=2, poll_interval_s=0.1, lease_s=10)
    first, second = Relay(pg_engine, pg_url, nc, config), Relay(pg_engine, pg_url, nc2, config)
    try:
        async with running(first), running(second):
            await eventually(
                lambda: _all_in(pg_engine, OutboxState.PUBLISHED, len(written)),
                what="all published",
            )
    finally:
        await nc2.close()
    assert first.stats["published"] > 0 and second.stats["published"] > 0, "both did work"
    assert first.stats["duplicates"] == second.stats["duplicates"] == 0
    assert first.stats["published"] + second.stats["published"] == len(written)
    assert_exactly_once_in_order(await stream_messages(nc.jetstream()), written)


async def test_a_rolled_back_transaction_leaves_no_outbox_row(pg_engine: AsyncEngine) -> None:
    async with UnitOfWork(pg_engine, schema_registry()) as uow:
        await uow.outbox.add(quota_event("rolled-back", 1))
        await uow.rollback()
    async with UnitOfWork(pg_engine, schema_registry()) as uow:
        await uow.outbox.add(quota_event("rolled-back", 2))
        # leaving without commit() also rolls back
    assert await states(pg_engine) == {}


async def test_a_transaction_held_open_is_not_skipped_when_it_commits_later(
    pg_engine: AsyncEngine, pg_url: str, nc: NATS
) -> None:
    relay = Relay(pg_engine, pg_url, nc, FAST)
    held = UnitOfWork(pg_engine, schema_registry())
    async with running(relay):
        async with held as uow:
            slow = await uow.outbox.add(quota_event("slow", 1))  # id allocated first
            later = await write_events(pg_engine, aggregates=10, per_aggregate=2, prefix="fast")
            await eventually(
                lambda: _all_in(pg_engine, OutboxState.PUBLISHED, len(later)),
                what="later commits published",
            )
            await uow.commit()
        await eventually(
            lambda: _all_in(pg_engine, OutboxState.PUBLISHED, len(later) + 1),
            what="held transaction's event published",
        )
    messages = await stream_messages(nc.jetstream())
    assert messages[-1]["envelope"]["event_id"] == slow.event_id
    assert_exactly_once_in_order(messages, [*later, slow])


async def test_nats_outage_keeps_writes_and_drains_the_backlog_afterwards(
    pg_engine: AsyncEngine, pg_url: str, private_nats: PrivateNats
) -> None:
    client = await nats.connect(
        private_nats.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2
    )
    relay = Relay(pg_engine, pg_url, client, FAST)
    try:
        async with running(relay):
            before = await write_events(pg_engine, aggregates=5, per_aggregate=2, prefix="a")
            await eventually(
                lambda: _all_in(pg_engine, OutboxState.PUBLISHED, len(before)),
                what="published before the outage",
            )
            private_nats.stop()
            during = await write_events(pg_engine, aggregates=5, per_aggregate=4, prefix="b")
            backlog = await states(pg_engine)
            assert backlog[OutboxState.OUTBOX_WRITTEN] == len(during), "events wait in outbox"
            private_nats.start()
            await eventually(
                lambda: _all_in(pg_engine, OutboxState.PUBLISHED, len(before) + len(during)),
                what="backlog drained after NATS came back",
            )
        messages = await stream_messages(client.jetstream())
    finally:
        await client.close()
    assert_exactly_once_in_order(messages, [*before, *during])
    assert (await states(pg_engine)).get(OutboxState.DEAD_LETTERED, 0) == 0


async def _all_in(engine: AsyncEngine, state: str, n: int) -> bool:
    return (await states(engine)).get(state, 0) == n


async def _listening(engine: AsyncEngine) -> bool:
    from sqlalchemy import text

    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'")
        )
        return rows.scalar_one() > 0


async def test_published_rows_record_their_stream_sequence(
    pg_engine: AsyncEngine, pg_url: str, nc: NATS
) -> None:
    written = await write_events(pg_engine, aggregates=3, per_aggregate=1)
    async with running(Relay(pg_engine, pg_url, nc, FAST)):
        await eventually(lambda: _all_in(pg_engine, OutboxState.PUBLISHED, 3), what="published")
    async with pg_engine.connect() as conn:
        rows = (await conn.execute(select(outbox.c.event_id, outbox.c.stream_sequence))).all()
    by_id = {m["envelope"]["event_id"]: m["seq"] for m in await stream_messages(nc.jetstream())}
    assert {r.event_id: r.stream_sequence for r in rows} == by_id
    assert len(by_id) == len(written)
