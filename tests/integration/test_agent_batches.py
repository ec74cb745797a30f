"""Bulk create and batched status changes (the controller's group commit), on real
PostgreSQL and on SQLite: all or nothing where promised, per-item errors where promised."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.bootstrap import schema_registry
from controlplane.data.repositories.agents import AgentRepository
from controlplane.data.tables import agent_transitions, agents, audit_log, outbox
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.agents.lifecycle import IllegalTransition, Phase
from controlplane.domain.errors import AlreadyExists, Conflict, ValidationFailed
from controlplane.service import agents as svc


def manifest(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "agentos.io/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": {
            "image": "busybox",
            "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}},
            **spec,
        },
    }


async def count(engine: AsyncEngine, table: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_bulk_create_writes_each_agent_with_its_events_history_and_audit(
    engine: AsyncEngine,
) -> None:
    async with UnitOfWork(engine, schema_registry()) as uow:
        created = await svc.create_agents(uow, "team-a", [manifest(f"a{i}") for i in range(3)])
    assert [r.name for r in created] == ["a0", "a1", "a2"]
    assert await count(engine, agents) == 3
    assert await count(engine, agent_transitions) == 3
    # tenant.created + per agent (agent.created, agent.phase_changed)
    assert await count(engine, outbox) == 1 + 6
    assert await count(engine, audit_log) == 1 + 3
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(outbox.c.aggregate_id, outbox.c.sequence, outbox.c.event_type)
                .where(outbox.c.aggregate_type == "agent")
                .order_by(outbox.c.id)
            )
        ).all()
        held = await AgentRepository(conn).reservations([Phase.CREATED])
    for record in created:
        mine = [(seq, kind) for agg, seq, kind in rows if agg == record.id]
        assert mine == [(1, "agent.created"), (2, "agent.phase_changed")]
    assert [(r.tenant, r.agents, r.cpu_millis, r.memory_bytes) for r in held] == [
        ("team-a", 3, 750, 3 * 64 * 2**20)
    ]


async def test_bulk_create_with_one_bad_manifest_names_it_and_creates_nothing(
    engine: AsyncEngine,
) -> None:
    bad = manifest("b1", image="")
    del bad["spec"]["image"]
    with pytest.raises(ValidationFailed) as caught:
        async with UnitOfWork(engine, schema_registry()) as uow:
            await svc.create_agents(uow, "team-a", [manifest("b0"), bad, manifest("Bad_Name")])
    pointers = {e.pointer for e in caught.value.errors}
    assert "/1/spec/image" in pointers
    assert "/2/metadata/name" in pointers
    assert await count(engine, agents) == 0
    assert await count(engine, outbox) == 0


async def test_bulk_create_with_a_taken_name_creates_nothing(engine: AsyncEngine) -> None:
    async with UnitOfWork(engine, schema_registry()) as uow:
        await svc.create_agents(uow, "team-a", [manifest("taken")])
    with pytest.raises(AlreadyExists):
        async with UnitOfWork(engine, schema_registry()) as uow:
            await svc.create_agents(uow, "team-a", [manifest("fresh"), manifest("taken")])
    async with engine.connect() as conn:
        names = (await conn.execute(select(agents.c.name))).scalars().all()
    assert names == ["taken"]
    assert await count(engine, outbox) == 1 + 2


async def test_a_batch_of_changes_applies_the_valid_ones_and_reports_the_others(
    engine: AsyncEngine,
) -> None:
    async with UnitOfWork(engine, schema_registry()) as uow:
        a, b, c = await svc.create_agents(uow, "team-a", [manifest(n) for n in "abc"])
    async with UnitOfWork(engine, schema_registry()) as uow:
        await svc.update_status(uow, b, message="someone else wrote first")
        await uow.commit()
    async with UnitOfWork(engine, schema_registry()) as uow:
        results = await svc.change_statuses(
            uow,
            [
                svc.StatusChange(a, {"node": "node-1"}, Phase.SCHEDULED, "Scheduled", "placed"),
                svc.StatusChange(b, {"node": "node-1"}, Phase.SCHEDULED, "Scheduled", "placed"),
                svc.StatusChange(c, {}, Phase.READY, "Ready", "skipping phases"),
            ],
        )
        await uow.commit()
    moved, stale, illegal = results
    assert isinstance(stale, Conflict)
    assert isinstance(illegal, IllegalTransition)
    assert not isinstance(moved, Exception)
    assert (moved.phase, moved.status.node) == (Phase.SCHEDULED, "node-1")
    assert moved.resource_version == 2
    async with engine.connect() as conn:
        repo = AgentRepository(conn)
        stored = await repo.by_ids([a.id, b.id, c.id])
        history = await repo.transitions(a.id)
        held = await repo.reservations([Phase.SCHEDULED])
    assert stored[a.id] == moved, "the record returned is the record stored"
    assert stored[b.id].phase is Phase.CREATED
    assert stored[c.id].phase is Phase.CREATED
    assert [h["to_phase"] for h in history] == ["Created", "Scheduled"]
    assert [(r.node, r.agents, r.cpu_millis) for r in held] == [("node-1", 1, 250)]
    # one phase_changed event more (for a alone), with the next sequence of its aggregate
    async with engine.connect() as conn:
        seqs = (
            await conn.execute(
                select(outbox.c.sequence).where(outbox.c.aggregate_id == a.id).order_by(outbox.c.id)
            )
        ).scalars()
    assert list(seqs) == [1, 2, 3]
