"""The relay's claim on PostgreSQL: the cases of tests/unit/test_relay_store.py, and a claim
whose snapshot predates another relay's whole cycle (READ COMMITTED's lock recheck)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.data.outbox.relay_store import Published, RelayStore, _claim_query
from harness.waiting import eventually
from tests.integration.outbox_helpers import write_events
from tests.unit import test_relay_store as cases

pytestmark = [pytest.mark.postgres]

HELD = 18_001  # the advisory lock the slow claim waits on


async def test_the_relay_reads_the_envelope_the_writer_encoded(pg_engine: AsyncEngine) -> None:
    await cases.test_the_relay_reads_the_envelope_the_writer_encoded(pg_engine)


async def test_a_row_without_a_stored_envelope_is_encoded_from_its_columns(
    pg_engine: AsyncEngine,
) -> None:
    await cases.test_a_row_without_a_stored_envelope_is_encoded_from_its_columns(pg_engine)


async def _waiting_on_advisory_lock(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        waiting = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_locks"
                " WHERE locktype = 'advisory' AND objid = :key AND NOT granted"
            ),
            {"key": HELD},
        )
    return bool(waiting)


async def test_a_claim_skips_an_aggregate_another_relay_leased_and_released_since_its_snapshot(
    pg_engine: AsyncEngine,
) -> None:
    """Relay B's claim takes its snapshot, then waits (its `now` is behind an advisory lock
    this test holds) while relay A claims, publishes and releases aggregate t0. B must not
    lock t0: its snapshot still shows t0's events unpublished, which B would publish again
    (the fault CI once saw as 16 duplicates). t1, which A left alone, B claims."""
    await write_events(pg_engine, aggregates=2, per_aggregate=1)
    store = RelayStore(pg_engine)
    gate = await pg_engine.connect()
    await gate.execute(text("SELECT pg_advisory_lock(:key)"), {"key": HELD})
    slow_now = select(func.now()).select_from(func.pg_advisory_xact_lock(HELD)).scalar_subquery()

    async def claim_b() -> list[tuple[str, str]]:
        async with pg_engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            rows = await conn.execute(_claim_query(slow_now, 10, lateral=True))
            return [(r.aggregate_type, r.aggregate_id) for r in rows]

    try:
        b = asyncio.create_task(claim_b())
        await eventually(lambda: _waiting_on_advisory_lock(pg_engine), what="B's claim waits")
        keys, rows = await store.claim_pending("relay-a", 10, limit=1, per_aggregate=10)
        assert keys == [("tenant", "t0")]
        await store.finish(
            "relay-a", keys, [Published(r.id, i) for i, r in enumerate(rows)], [], []
        )
    finally:
        await gate.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": HELD})
        await gate.close()
    assert await b == [("tenant", "t1")]
