"""UnitOfWork on real PostgreSQL and on SQLite: one transaction for row, event and audit."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.bootstrap import schema_registry
from controlplane.data.tables import audit_log, outbox, tenants
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.errors import EventSchemaViolation
from controlplane.domain.events.envelope import NewEvent
from controlplane.service.tenants import create_tenant, set_tenant_quota


async def counts(engine: AsyncEngine) -> tuple[int, int, int]:
    async with engine.connect() as conn:
        found = [
            (await conn.execute(select(func.count()).select_from(t))).scalar_one()
            for t in (tenants, outbox, audit_log)
        ]
    return found[0], found[1], found[2]


async def test_a_change_commits_with_its_event_and_audit_entry(engine: AsyncEngine) -> None:
    async with UnitOfWork(engine, schema_registry(), principal="alice") as uow:
        await create_tenant(uow, "team-a", {"agents": 3})
    async with UnitOfWork(engine, schema_registry()) as uow:
        await set_tenant_quota(uow, "team-a", {"agents": 5})
    assert await counts(engine) == (1, 2, 2)
    async with engine.connect() as conn:
        seqs = (await conn.execute(select(outbox.c.sequence).order_by(outbox.c.id))).scalars()
        principals = (await conn.execute(select(audit_log.c.principal))).scalars().all()
    assert list(seqs) == [1, 2], "gapless sequence per aggregate"
    assert sorted(principals) == ["alice", "system"]


async def test_a_payload_failing_its_schema_writes_nothing(engine: AsyncEngine) -> None:
    bad = NewEvent(
        "tenant.quota_changed",
        "tenant",
        "team-b",
        "team-b",
        payload={"name": "team-b", "quota": {"agents": -1}},
    )
    with pytest.raises(EventSchemaViolation, match="/payload/quota/agents"):
        async with UnitOfWork(engine, schema_registry()) as uow:
            await uow.tenants.add("team-b", {})
            await uow.outbox.add(bad)
            await uow.commit()
    assert await counts(engine) == (0, 0, 0)
