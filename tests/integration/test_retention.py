"""Retention on real PostgreSQL: the cases of tests/unit/test_retention.py, and a purge that
neither waits for writers nor makes them wait."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.bootstrap import schema_registry
from controlplane.data.retention import Retention, RetentionPolicy
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.events.envelope import EventEnvelope, OutboxState
from tests.integration.outbox_helpers import quota_event
from tests.unit.test_retention import (
    DAY,
    add_outbox,
    case_idempotency,
    case_keep_for_ever,
    case_outbox,
    case_run_steps,
    outbox_ids,
)

pytestmark = [pytest.mark.postgres]


async def test_published_outbox_rows_past_retention_are_purged_in_batches(
    pg_engine: AsyncEngine,
) -> None:
    await case_outbox(pg_engine)


async def test_ended_runs_lose_their_steps_and_checkpoint_after_retention(
    pg_engine: AsyncEngine,
) -> None:
    await case_run_steps(pg_engine)


async def test_expired_idempotency_keys_are_purged(pg_engine: AsyncEngine) -> None:
    await case_idempotency(pg_engine)


async def test_a_retention_of_zero_keeps_rows_for_ever(pg_engine: AsyncEngine) -> None:
    await case_keep_for_ever(pg_engine)


async def test_a_purge_skips_a_row_a_transaction_holds_instead_of_waiting(
    pg_engine: AsyncEngine,
) -> None:
    [held, *others] = await add_outbox(pg_engine, OutboxState.PUBLISHED, 8 * DAY, count=5)
    policy = RetentionPolicy(outbox_s=7 * 86400, run_steps_s=0, idempotency=False, batch_size=2)
    async with pg_engine.connect() as holder:
        # A consumer acknowledging the event: its transaction holds the row, still open.
        await holder.execute(
            text("UPDATE outbox SET state = 'Acknowledged' WHERE id = :id"), {"id": held}
        )
        purged = await asyncio.wait_for(Retention(pg_engine, policy).purge(), 30)
        assert purged["outbox"] == len(others), "the held row is left for the next pass"
        assert await outbox_ids(pg_engine) == {held}
        await holder.commit()
    assert (await Retention(pg_engine, policy).purge())["outbox"] == 1
    assert await outbox_ids(pg_engine) == set()


async def test_writers_commit_while_a_purge_runs(pg_engine: AsyncEngine) -> None:
    old = await add_outbox(pg_engine, OutboxState.PUBLISHED, 8 * DAY, count=2000, aggregate="w")
    policy = RetentionPolicy(outbox_s=7 * 86400, run_steps_s=0, idempotency=False, batch_size=20)
    purge = asyncio.create_task(Retention(pg_engine, policy).purge())
    overlapped = 0
    written: list[EventEnvelope] = []
    # Writers go on committing, each in a transaction of its own, into the table being
    # purged; the purge's batches never hold them up for long.
    while not purge.done() and len(written) < 200:
        async with UnitOfWork(pg_engine, schema_registry()) as uow:
            written.append(await uow.outbox.add(quota_event(f"w{len(written) % 2}", 1)))
            await asyncio.wait_for(uow.commit(), 5)
        overlapped += not purge.done()
    purged = await purge
    assert overlapped > 0, "at least one writer committed while the purge was running"
    assert purged["outbox"] == len(old)
    ids = await outbox_ids(pg_engine)
    assert not ids & set(old) and len(ids) == len(written), "new events kept, old ones gone"
