"""The real services of `make services` answer: PostgreSQL and NATS JetStream."""

from __future__ import annotations

import uuid

import asyncpg
import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig


@pytest.mark.postgres
async def test_postgresql_answers_a_query(pg_admin_dsn: str) -> None:
    conn = await asyncpg.connect(pg_admin_dsn)
    try:
        version = await conn.fetchval("SHOW server_version")
        total = await conn.fetchval("SELECT sum(x) FROM generate_series(1, 10) AS x")
    finally:
        await conn.close()
    print(f"PostgreSQL server_version={version}")
    assert version.startswith("15.")
    assert total == 55


@pytest.mark.nats
async def test_jetstream_stream_publish_and_consume_with_ack(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    stream = f"FOUNDATION_{uuid.uuid4().hex[:8].upper()}"
    subject = f"foundation.{stream.lower()}"
    try:
        await js.add_stream(StreamConfig(name=stream, subjects=[subject]))
        ack = await js.publish(subject, b"hello", headers={"Nats-Msg-Id": "m-1"})
        again = await js.publish(subject, b"hello", headers={"Nats-Msg-Id": "m-1"})
        sub = await js.pull_subscribe(
            subject, durable="reader", config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT)
        )
        [msg] = await sub.fetch(1, timeout=5)
        await msg.ack_sync()
        info = await js.consumer_info(stream, "reader")
        print(f"JetStream stream={stream} seq={ack.seq} ack_floor={info.ack_floor.stream_seq}")
    finally:
        await js.delete_stream(stream)
        await nc.close()
    assert msg.data == b"hello"
    assert again.duplicate is True and again.seq == ack.seq
    assert info.ack_floor.stream_seq == ack.seq
    assert info.num_ack_pending == 0
