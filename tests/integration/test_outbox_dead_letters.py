"""Relay-side dead letters and replays through the CLI, on real PostgreSQL and NATS."""

from __future__ import annotations

import json

import pytest
from nats.aio.client import Client as NATS
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.domain.events.envelope import OutboxState
from controlplane.messaging.relay import Relay, RelayConfig
from controlplane.messaging.streams import DLQ_STREAM, EVENTS_STREAM, ensure_streams
from tests.integration.outbox_helpers import eventually, states, stream_messages, write_events
from tests.integration.test_outbox_consumer import cli
from tests.integration.test_outbox_relay import running

pytestmark = [pytest.mark.postgres, pytest.mark.nats]


async def test_an_event_that_cannot_be_published_is_dead_lettered_after_max_attempts(
    pg_engine: AsyncEngine, pg_url: str, nc: NATS, agentos_env: dict[str, str]
) -> None:
    js = nc.jetstream()
    config = RelayConfig(
        max_attempts=3,
        backoff_base_s=0.01,
        backoff_max_s=0.05,
        poll_interval_s=0.05,
        publish_timeout_s=1.0,
    )
    relay = Relay(pg_engine, pg_url, nc, config)
    async with running(relay):
        await eventually(lambda: _has_stream(nc, DLQ_STREAM), what="streams declared")
        await js.delete_stream(EVENTS_STREAM)  # nothing captures agentos.events.> now
        [event] = await write_events(pg_engine, aggregates=1, per_aggregate=1)
        await eventually(
            lambda: _count(pg_engine, OutboxState.DEAD_LETTERED, 1), what="dead-lettered"
        )
    listed = json.loads(cli(agentos_env, "outbox", "dlq", "list", "-o", "json"))
    assert [(d["event_id"], d["source"], d["attempts"]) for d in listed] == [
        (event.event_id, "relay", 3)
    ]
    assert "publish failed 3 times" in listed[0]["reason"]
    [dlq] = await stream_messages(js, DLQ_STREAM)
    assert dlq["envelope"]["envelope"]["event_id"] == event.event_id

    await ensure_streams(js)  # the broker is fixed
    assert "1 dead letters requeued" in cli(agentos_env, "outbox", "dlq", "requeue", "--all")
    async with running(Relay(pg_engine, pg_url, nc, config)):
        await eventually(lambda: _count(pg_engine, OutboxState.PUBLISHED, 1), what="published")
    [message] = await stream_messages(js)
    assert message["envelope"]["event_id"] == event.event_id
    assert message["msg_id"] == f"{event.event_id}.r1"


async def test_cli_replays_from_an_event_id_and_since_a_time_keeping_event_ids(
    pg_engine: AsyncEngine, pg_url: str, nc: NATS, agentos_env: dict[str, str]
) -> None:
    written = await write_events(pg_engine, aggregates=2, per_aggregate=2)
    config = RelayConfig(poll_interval_s=0.05)
    async with running(Relay(pg_engine, pg_url, nc, config)):
        await eventually(lambda: _count(pg_engine, OutboxState.PUBLISHED, 4), what="published")
        out = cli(agentos_env, "outbox", "replay", "--from-id", written[2].event_id)
        assert "2 events queued for replay" in out
        await eventually(lambda: _stream_count(nc, 6), what="replayed")
        since = written[3].occurred_at.isoformat()
        assert "1 events queued" in cli(agentos_env, "outbox", "replay", "--since", since)
        await eventually(lambda: _stream_count(nc, 7), what="replayed since")
    ids = [m["envelope"]["event_id"] for m in await stream_messages(nc.jetstream())]
    # Order holds per aggregate; two aggregates' chains are published side by side.
    first, replayed, replayed_since = ids[:4], ids[4:6], ids[6:]
    for aggregate in {e.aggregate_id for e in written}:
        own = [e.event_id for e in written if e.aggregate_id == aggregate]
        assert [i for i in first if i in own] == own
    assert sorted(replayed) == sorted([written[2].event_id, written[3].event_id])
    assert replayed_since == [written[3].event_id]
    status = json.loads(cli(agentos_env, "outbox", "status", "-o", "json"))
    assert status["counts"][OutboxState.PUBLISHED] == 4


async def test_cli_refuses_a_replay_without_exactly_one_selector(
    agentos_env: dict[str, str],
) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "controlplane.cli.main", "outbox", "replay"],
        env=agentos_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "exactly one of --from-id, --since, --aggregate" in done.stderr


async def _count(engine: AsyncEngine, state: str, n: int) -> bool:
    return (await states(engine)).get(state, 0) == n


async def _has_stream(nc: NATS, name: str) -> bool:
    try:
        await nc.jetstream().stream_info(name)
    except Exception:
        return False
    return True


async def _stream_count(nc: NATS, n: int) -> bool:
    return (await nc.jetstream().stream_info(EVENTS_STREAM)).state.messages == n
