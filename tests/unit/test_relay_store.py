"""The relay's reads on SQLite: the envelope the writer encoded is what goes out, and a row
written before it was stored (migration 0010) goes out encoded the same way."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.bootstrap import schema_registry
from controlplane.data import migrate
from controlplane.data.engine import create_engine
from controlplane.data.outbox.relay_store import RelayStore
from controlplane.data.outbox.wire import decode_envelope, encode_envelope
from controlplane.data.tables import outbox
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.events.envelope import NewEvent


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'relay.db'}"
    migrate.upgrade(url)
    engine = create_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()


def quota_event(tenant: str, agents: int) -> NewEvent:
    return NewEvent(
        event_type="tenant.quota_changed",
        aggregate_type="tenant",
        aggregate_id=tenant,
        tenant_id=tenant,
        payload={"name": tenant, "quota": {"agents": agents}},
    )


async def test_the_relay_reads_the_envelope_the_writer_encoded(engine: AsyncEngine) -> None:
    async with UnitOfWork(engine, schema_registry()) as uow:
        written = await uow.outbox.add_many([quota_event("a", 1), quota_event("a", 2)])
        await uow.commit()
    keys, rows = await RelayStore(engine).claim_pending("me", 30, 10, 10)
    assert keys == [("tenant", "a")]
    assert [r.data for r in rows] == [encode_envelope(e) for e in written]
    assert [decode_envelope(r.data) for r in rows] == written
    assert rows[1].envelope == written[1]


async def test_a_row_without_a_stored_envelope_is_encoded_from_its_columns(
    engine: AsyncEngine,
) -> None:
    async with UnitOfWork(engine, schema_registry()) as uow:
        [event] = await uow.outbox.add_many([quota_event("old", 1)])
        await uow.commit()
    async with engine.begin() as conn:
        await conn.execute(update(outbox).values(encoded_envelope=None))
    _, [row] = await RelayStore(engine).claim_pending("me", 30, 10, 10)
    assert row.data == encode_envelope(event)
