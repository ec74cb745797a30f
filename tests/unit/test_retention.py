"""Retention on SQLite: what is past its retention goes, what is still needed stays.

The same cases run on PostgreSQL in tests/integration/test_retention.py.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from controlplane.data import migrate
from controlplane.data.engine import create_engine
from controlplane.data.retention import Retention, RetentionPolicy, purged_through
from controlplane.data.tables import (
    idempotency_keys,
    outbox,
    run_checkpoints,
    run_steps,
    runs,
    tenants,
)
from controlplane.domain.events.envelope import OutboxState, utcnow

DAY = timedelta(days=1)
POLICY = RetentionPolicy(outbox_s=7 * 86400, run_steps_s=30 * 86400, batch_size=2)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'retention.db'}"
    migrate.upgrade(url)
    engine = create_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def add_outbox(
    engine: AsyncEngine, state: str, age: timedelta, *, count: int = 1, aggregate: str = "a"
) -> list[int]:
    """`count` outbox rows in `state`, written (and published, unless OutboxWritten) `age`
    ago; returns their ids."""
    at = utcnow() - age
    async with engine.begin() as conn:
        rows: list[dict[str, Any]] = [
            {
                "event_id": str(uuid.uuid4()),
                "event_type": "tenant.quota_changed",
                "schema_version": 1,
                "aggregate_type": "tenant",
                "aggregate_id": aggregate,
                "sequence": (await _next_sequence(conn)) + i,
                "tenant_id": aggregate,
                "occurred_at": at,
                "payload": {},
                "state": state,
                "next_attempt_at": at,
                "published_at": None if state == OutboxState.OUTBOX_WRITTEN else at,
            }
            for i in range(count)
        ]
        await conn.execute(insert(outbox), rows)
        ids = (
            await conn.execute(
                select(outbox.c.id).where(outbox.c.event_id.in_([r["event_id"] for r in rows]))
            )
        ).scalars()
        return sorted(ids)


async def _next_sequence(conn: AsyncConnection) -> int:
    result = await conn.execute(select(func.coalesce(func.max(outbox.c.sequence), 0)))
    return int(result.scalar_one()) + 1


async def add_run(engine: AsyncEngine, phase: str, age: timedelta, steps: int = 3) -> str:
    """A run in `phase`, last updated `age` ago, with `steps` journal rows and a checkpoint."""
    run_id = str(uuid.uuid4())
    at = utcnow() - age
    async with engine.begin() as conn:
        if not (await conn.execute(select(tenants.c.name).where(tenants.c.name == "t"))).first():
            await conn.execute(insert(tenants).values(name="t", created_at=at, updated_at=at))
        await conn.execute(
            insert(runs).values(
                id=run_id,
                tenant="t",
                agent_id=str(uuid.uuid4()),
                agent="agent",
                name=f"run-{run_id[:8]}",
                spec={},
                status={},
                phase=phase,
                created_at=at,
                updated_at=at,
                deadline_at=at + DAY,
            )
        )
        await conn.execute(
            insert(run_steps),
            [
                {
                    "run_id": run_id,
                    "call_id": f"call-{i}",
                    "type": "tool",
                    "name": "step",
                    "status": "Succeeded",
                    "attempt": 1,
                    "step": {},
                    "recorded_at": at,
                }
                for i in range(steps)
            ],
        )
        await conn.execute(
            insert(run_checkpoints).values(run_id=run_id, state={}, attempt=1, saved_at=at)
        )
    return run_id


async def add_idempotency_key(engine: AsyncEngine, expires_at: datetime) -> str:
    key = str(uuid.uuid4())
    async with engine.begin() as conn:
        await conn.execute(
            insert(idempotency_keys).values(
                tenant="t",
                principal="p",
                key=key,
                request_hash="0" * 64,
                state="Completed",
                created_at=expires_at - DAY,
                expires_at=expires_at,
            )
        )
    return key


async def outbox_ids(engine: AsyncEngine) -> set[int]:
    async with engine.connect() as conn:
        return set((await conn.execute(select(outbox.c.id))).scalars())


async def steps_of(engine: AsyncEngine, run_id: str) -> tuple[int, int]:
    """(journal rows, checkpoint rows) of `run_id`."""
    async with engine.connect() as conn:
        steps = await conn.execute(
            select(func.count()).select_from(run_steps).where(run_steps.c.run_id == run_id)
        )
        checkpoints = await conn.execute(
            select(func.count())
            .select_from(run_checkpoints)
            .where(run_checkpoints.c.run_id == run_id)
        )
        return int(steps.scalar_one()), int(checkpoints.scalar_one())


# -- the cases, shared with the PostgreSQL tests -------------------------------------------------


async def case_outbox(engine: AsyncEngine) -> None:
    old = await add_outbox(engine, OutboxState.PUBLISHED, 8 * DAY, count=5)
    acked = await add_outbox(engine, OutboxState.ACKNOWLEDGED, 8 * DAY)
    recent = await add_outbox(engine, OutboxState.PUBLISHED, 6 * DAY)
    unpublished = await add_outbox(engine, OutboxState.OUTBOX_WRITTEN, 30 * DAY)
    dead = await add_outbox(engine, OutboxState.DEAD_LETTERED, 30 * DAY)
    purged = await Retention(engine, POLICY).purge()
    assert purged["outbox"] == 6, "in batches of 2: three full ones and the rest"
    assert await outbox_ids(engine) == {*recent, *unpublished, *dead}
    assert await purged_through(engine) == max(*old, *acked)


async def case_run_steps(engine: AsyncEngine) -> None:
    ended_long_ago = await add_run(engine, "Succeeded", 31 * DAY)
    failed_long_ago = await add_run(engine, "Failed", 40 * DAY)
    ended_lately = await add_run(engine, "Succeeded", 29 * DAY)
    running_long = await add_run(engine, "Running", 60 * DAY)
    purged = await Retention(engine, POLICY).purge()
    assert purged["run_steps"] == 6 and purged["run_checkpoints"] == 2
    assert await steps_of(engine, ended_long_ago) == (0, 0)
    assert await steps_of(engine, failed_long_ago) == (0, 0)
    assert await steps_of(engine, ended_lately) == (3, 1)
    assert await steps_of(engine, running_long) == (3, 1), "a run under way keeps its steps"
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(runs))).scalar_one() == 4


async def case_idempotency(engine: AsyncEngine) -> None:
    now = utcnow()
    for _ in range(3):
        await add_idempotency_key(engine, now - timedelta(seconds=1))
    live = await add_idempotency_key(engine, now + DAY)
    assert (await Retention(engine, POLICY).purge())["idempotency_keys"] == 3
    async with engine.connect() as conn:
        keys = set((await conn.execute(select(idempotency_keys.c.key))).scalars())
    assert keys == {live}


async def case_keep_for_ever(engine: AsyncEngine) -> None:
    await add_outbox(engine, OutboxState.PUBLISHED, 1000 * DAY)
    run_id = await add_run(engine, "Succeeded", 1000 * DAY)
    purged = await Retention(engine, RetentionPolicy(outbox_s=0, run_steps_s=0)).purge()
    assert "outbox" not in purged and "run_steps" not in purged
    assert len(await outbox_ids(engine)) == 1
    assert await steps_of(engine, run_id) == (3, 1)


# -- SQLite --------------------------------------------------------------------------------------


async def test_published_outbox_rows_past_retention_are_purged_in_batches(
    engine: AsyncEngine,
) -> None:
    await case_outbox(engine)


async def test_ended_runs_lose_their_steps_and_checkpoint_after_retention(
    engine: AsyncEngine,
) -> None:
    await case_run_steps(engine)


async def test_expired_idempotency_keys_are_purged(engine: AsyncEngine) -> None:
    await case_idempotency(engine)


async def test_a_retention_of_zero_keeps_rows_for_ever(engine: AsyncEngine) -> None:
    await case_keep_for_ever(engine)


async def test_a_watch_from_before_the_purge_is_told_its_version_expired(
    engine: AsyncEngine,
) -> None:
    from controlplane.data.outbox.change_feed import OutboxFeed
    from controlplane.domain.errors import ResourceVersionExpired

    old = await add_outbox(engine, OutboxState.PUBLISHED, 8 * DAY, count=3)
    [kept] = await add_outbox(engine, OutboxState.PUBLISHED, 1 * DAY)
    await Retention(engine, POLICY).purge()
    feed = OutboxFeed(engine)
    with pytest.raises(ResourceVersionExpired):
        await feed.read(old[0], kept, tenant=None, aggregate_type="tenant")
    [event] = await feed.read(old[-1], kept, tenant=None, aggregate_type="tenant")
    assert event.id == kept
