"""The agent use cases of controlplane/service/agents.py as a specification, run against the
in-memory UnitOfWork of tests/unit/fakes.py (the same calls on PostgreSQL are covered by
tests/integration/test_unit_of_work.py and the API tests).

Every change is one UnitOfWork: the record, its history row, its outbox events and its audit
entry are committed together, or nothing is (architecture/data-layer.md).
"""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.domain.agents.lifecycle import Phase
from controlplane.domain.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    IdempotencyKeyReused,
    ValidationFailed,
)
from controlplane.domain.records import AgentRecord
from controlplane.service import agents as svc
from controlplane.service.idempotency import IdempotencyRequest, request_hash
from tests.unit.fakes import FakeDatabase

TENANT = "team-a"


def manifest(name: str = "worker", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "agentos.io/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": {"image": "registry.example/agent:1", "runtime": {"class": "runc"}, **spec},
    }


@pytest.fixture
def db() -> FakeDatabase:
    return FakeDatabase()


async def create(db: FakeDatabase, name: str = "worker", tenant: str = TENANT) -> AgentRecord:
    async with db.uow() as uow:
        result = await svc.apply_agent(uow, tenant, manifest(name), create_only=True)
    return result.agent


def events_of(db: FakeDatabase, agent: AgentRecord) -> list[str]:
    return [e.event_type for e in db.committed.events if e.aggregate_id == agent.id]


# -- create ----------------------------------------------------------------------------------------


async def test_create_stores_one_agent_in_phase_created_at_generation_one(
    db: FakeDatabase,
) -> None:
    agent = await create(db)
    assert list(db.committed.agents) == [agent.id]
    stored = db.committed.agents[agent.id]
    assert (stored.phase, stored.generation, stored.resource_version) == (Phase.CREATED, 1, 1)


async def test_create_writes_agent_created_then_phase_changed_in_sequence(
    db: FakeDatabase,
) -> None:
    agent = await create(db)
    written = [e for e in db.committed.events if e.aggregate_id == agent.id]
    assert [(e.event_type, e.sequence) for e in written] == [
        ("agent.created", 1),
        ("agent.phase_changed", 2),
    ]
    assert written[1].payload["from_phase"] is None and written[1].payload["to_phase"] == "Created"


async def test_create_appends_one_audit_entry_that_names_the_created_event(
    db: FakeDatabase,
) -> None:
    agent = await create(db)
    (entry,) = [row for row in db.committed.audit if row.entry.action == "agent.create"]
    created = next(e for e in db.committed.events if e.event_type == "agent.created")
    assert entry.entry.resource == f"tenants/{TENANT}/agents/worker"
    assert entry.entry.event_id == created.event_id and created.aggregate_id == agent.id
    assert entry.principal == "test"


async def test_create_records_the_first_transition_from_nothing_to_created(
    db: FakeDatabase,
) -> None:
    agent = await create(db)
    phase_event = next(e for e in db.committed.events if e.event_type == "agent.phase_changed")
    assert db.committed.transitions == [
        (agent.id, None, "Created", "Created", "accepted", phase_event.event_id)
    ]


async def test_create_commits_once(db: FakeDatabase) -> None:
    await create(db)
    assert db.commits == 1


async def test_the_first_agent_of_a_tenant_creates_the_tenant_with_its_event(
    db: FakeDatabase,
) -> None:
    await create(db)
    assert db.committed.tenants[TENANT].quota == {}
    assert db.event_types()[0] == "tenant.created"
    assert db.audit_actions() == ["tenant.create", "agent.create"]


async def test_a_second_agent_of_a_tenant_does_not_create_the_tenant_again(
    db: FakeDatabase,
) -> None:
    await create(db, "one")
    await create(db, "two")
    assert db.event_types().count("tenant.created") == 1


async def test_a_duplicate_name_is_already_exists(db: FakeDatabase) -> None:
    await create(db)
    with pytest.raises(AlreadyExists) as raised:
        await create(db)
    assert raised.value.code == "ALREADY_EXISTS"


async def test_a_refused_duplicate_writes_nothing(db: FakeDatabase) -> None:
    await create(db)
    before = (len(db.committed.events), len(db.committed.audit), db.commits)
    with pytest.raises(AlreadyExists):
        await create(db)
    assert (len(db.committed.events), len(db.committed.audit), db.commits) == before


async def test_the_same_name_in_another_tenant_is_another_agent(db: FakeDatabase) -> None:
    one = await create(db, tenant="team-a")
    two = await create(db, tenant="team-b")
    assert one.id != two.id and len(db.committed.agents) == 2


async def test_a_namespace_that_contradicts_the_tenant_is_a_bad_request(
    db: FakeDatabase,
) -> None:
    body = manifest()
    body["metadata"]["namespace"] = "team-b"
    async with db.uow() as uow:
        with pytest.raises(BadRequest) as raised:
            await svc.apply_agent(uow, TENANT, body)
    assert [e.pointer for e in raised.value.errors] == ["/metadata/namespace"]
    assert db.committed.agents == {}


async def test_an_invalid_manifest_names_the_field_and_writes_nothing(db: FakeDatabase) -> None:
    body = manifest()
    del body["spec"]["image"]
    async with db.uow() as uow:
        with pytest.raises(ValidationFailed) as raised:
            await svc.apply_agent(uow, TENANT, body)
    assert any(e.pointer == "/spec/image" for e in raised.value.errors)
    assert db.commits == 0


# -- create with an idempotency key ------------------------------------------------------------


def key(body: dict[str, Any], name: str = "k1") -> IdempotencyRequest:
    return IdempotencyRequest(TENANT, "alice", name, request_hash("POST agents", body))


async def test_a_repeated_create_with_the_same_key_replays_the_first_response(
    db: FakeDatabase,
) -> None:
    body = manifest()
    async with db.uow() as uow:
        first = await svc.create_agent(uow, TENANT, body, idempotency=key(body))
    async with db.uow() as uow:
        again = await svc.create_agent(uow, TENANT, body, idempotency=key(body))
    assert again.replayed and again.agent_id is None and again.body == first.body
    assert len(db.committed.agents) == 1


async def test_a_key_reused_with_another_body_is_refused(db: FakeDatabase) -> None:
    body, other = manifest("one"), manifest("two")
    async with db.uow() as uow:
        await svc.create_agent(uow, TENANT, body, idempotency=key(body))
    async with db.uow() as uow:
        with pytest.raises(IdempotencyKeyReused):
            await svc.create_agent(uow, TENANT, other, idempotency=key(other))
    assert len(db.committed.agents) == 1


# -- bulk create -------------------------------------------------------------------------------


async def test_a_bulk_create_makes_every_agent_in_one_commit(db: FakeDatabase) -> None:
    async with db.uow() as uow:
        made = await svc.create_agents(uow, TENANT, [manifest(f"w{i}") for i in range(5)])
    assert sorted(a.name for a in made) == [f"w{i}" for i in range(5)]
    assert db.commits == 1 and db.audit_actions().count("agent.create") == 5


async def test_a_bulk_create_with_one_taken_name_creates_none(db: FakeDatabase) -> None:
    await create(db, "w1")
    async with db.uow() as uow:
        with pytest.raises(AlreadyExists):
            await svc.create_agents(uow, TENANT, [manifest("w0"), manifest("w1")])
    assert [a.name for a in db.committed.agents.values()] == ["w1"]


async def test_a_bulk_create_names_a_bad_manifest_by_its_index(db: FakeDatabase) -> None:
    bad = manifest("w1")
    del bad["spec"]["image"]
    async with db.uow() as uow:
        with pytest.raises(ValidationFailed) as raised:
            await svc.create_agents(uow, TENANT, [manifest("w0"), bad])
    assert [e.pointer for e in raised.value.errors] == ["/1/spec/image"]


# -- apply (create or update) ------------------------------------------------------------------


async def test_applying_the_same_manifest_again_changes_nothing(db: FakeDatabase) -> None:
    await create(db)
    before = len(db.committed.events)
    async with db.uow() as uow:
        result = await svc.apply_agent(uow, TENANT, manifest())
    assert (result.created, result.changed) == (False, False)
    assert len(db.committed.events) == before


async def test_a_new_spec_bumps_the_generation_and_writes_agent_updated(
    db: FakeDatabase,
) -> None:
    agent = await create(db)
    async with db.uow() as uow:
        result = await svc.apply_agent(uow, TENANT, manifest(priority=5))
    assert result.changed and result.agent.generation == 2
    assert events_of(db, agent)[-1] == "agent.updated"
    assert db.audit_actions()[-1] == "agent.update"


async def test_a_label_change_alone_keeps_the_generation(db: FakeDatabase) -> None:
    await create(db)
    body = manifest()
    body["metadata"]["labels"] = {"team": "x"}
    async with db.uow() as uow:
        result = await svc.apply_agent(uow, TENANT, body)
    assert result.changed and result.agent.generation == 1 and result.agent.resource_version == 2


async def test_a_stale_expected_resource_version_is_a_conflict(db: FakeDatabase) -> None:
    await create(db)
    async with db.uow() as uow:
        with pytest.raises(Conflict):
            await svc.apply_agent(uow, TENANT, manifest(priority=5), expected_resource_version="7")


async def test_an_agent_being_deleted_is_not_updated(db: FakeDatabase) -> None:
    await create(db)
    async with db.uow() as uow:
        await svc.delete_agent(uow, TENANT, "worker")
    async with db.uow() as uow:
        with pytest.raises(Conflict):
            await svc.apply_agent(uow, TENANT, manifest(priority=5))


# -- quota -------------------------------------------------------------------------------------


async def test_a_create_beyond_the_tenants_quota_is_accepted_and_waits_for_admission(
    db: FakeDatabase,
) -> None:
    """The quota is enforced when agents are admitted (domain/scheduling/admission.py),
    not when they are created: the agent waits in Created."""
    async with db.uow() as uow:
        await uow.tenants.add(TENANT, {"agents": 1})
        await uow.commit()
    await create(db, "one")
    two = await create(db, "two")
    assert db.committed.agents[two.id].phase is Phase.CREATED


async def test_an_agent_in_a_tenant_made_with_a_quota_keeps_that_quota(db: FakeDatabase) -> None:
    async with db.uow() as uow:
        await uow.tenants.add(TENANT, {"agents": 3, "cpu_millis": 2000})
        await uow.commit()
    await create(db)
    assert db.committed.tenants[TENANT].quota == {"agents": 3, "cpu_millis": 2000}
    assert "tenant.created" not in db.event_types()
