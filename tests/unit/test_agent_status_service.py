"""Phase changes, status writes and deletion of agents (controlplane/service/agents.py) as a
specification, against the in-memory UnitOfWork of tests/unit/fakes.py.

A phase change is checked against the transition table and recorded three ways in the same
UnitOfWork: a history row, an `agent.phase_changed` event and an audit entry
(architecture/state-machines.md). Deletion is a request (Terminating) and, once the sandbox is
gone, a removal with `agent.deleted`.
"""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.domain.agents.lifecycle import IllegalTransition, Phase
from controlplane.domain.errors import AgentNotFound, AlreadyExists, Conflict
from controlplane.domain.records import AgentRecord
from controlplane.service import agents as svc
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


@pytest.fixture
async def agent(db: FakeDatabase) -> AgentRecord:
    async with db.uow() as uow:
        result = await svc.apply_agent(uow, TENANT, manifest(), create_only=True)
    return result.agent


async def move(db: FakeDatabase, record: AgentRecord, to: Phase, **status: Any) -> AgentRecord:
    async with db.uow() as uow:
        moved = await svc.transition(uow, record, to, "Test", "moved by the test", **status)
        await uow.commit()
    return moved


# -- transitions -------------------------------------------------------------------------------


async def test_a_legal_transition_changes_the_phase_and_the_resource_version(
    db: FakeDatabase, agent: AgentRecord
) -> None:
    moved = await move(db, agent, Phase.SCHEDULED, node="n1")
    stored = db.committed.agents[agent.id]
    assert (stored.phase, stored.status.node, stored.resource_version) == (
        Phase.SCHEDULED,
        "n1",
        agent.resource_version + 1,
    )
    assert moved == stored


async def test_a_transition_writes_a_phase_changed_event_naming_both_phases(
    db: FakeDatabase, agent: AgentRecord
) -> None:
    await move(db, agent, Phase.SCHEDULED)
    last = db.committed.events[-1]
    assert last.event_type == "agent.phase_changed" and last.aggregate_id == agent.id
    assert (last.payload["from_phase"], last.payload["to_phase"], last.payload["reason"]) == (
        "Created",
        "Scheduled",
        "Test",
    )


async def test_a_transition_appends_a_history_row_and_an_audit_entry_for_its_event(
    db: FakeDatabase, agent: AgentRecord
) -> None:
    await move(db, agent, Phase.SCHEDULED)
    event_id = db.committed.events[-1].event_id
    assert db.committed.transitions[-1] == (
        agent.id,
        "Created",
        "Scheduled",
        "Test",
        "moved by the test",
        event_id,
    )
    audit = db.committed.audit[-1].entry
    assert (audit.action, audit.event_id) == ("agent.transition", event_id)
    assert audit.details == {"from": "Created", "to": "Scheduled", "reason": "Test"}


async def test_an_illegal_transition_raises_and_writes_nothing(
    db: FakeDatabase, agent: AgentRecord
) -> None:
    before = (len(db.committed.events), len(db.committed.transitions))
    async with db.uow() as uow:
        with pytest.raises(IllegalTransition):
            await svc.transition(uow, agent, Phase.READY, "Skipped")
        await uow.commit()
    assert db.committed.agents[agent.id].phase is Phase.CREATED
    assert (len(db.committed.events), len(db.committed.transitions)) == before


async def test_a_transition_of_a_stale_record_is_a_conflict(
    db: FakeDatabase, agent: AgentRecord
) -> None:
    await move(db, agent, Phase.SCHEDULED)
    async with db.uow() as uow:
        with pytest.raises(Conflict):
            await svc.transition(uow, agent, Phase.FAILED, "Stale")


async def test_a_transition_does_not_commit(db: FakeDatabase, agent: AgentRecord) -> None:
    async with db.uow() as uow:
        await svc.transition(uow, agent, Phase.SCHEDULED, "Admitted")
    assert db.committed.agents[agent.id].phase is Phase.CREATED


async def test_a_batch_of_changes_reports_each_failure_in_place_and_applies_the_rest(
    db: FakeDatabase,
) -> None:
    async with db.uow() as uow:
        a, b, c = await svc.create_agents(uow, TENANT, [manifest(n) for n in ("a", "b", "c")])
    async with db.uow() as uow:
        results = await svc.change_statuses(
            uow,
            [
                svc.StatusChange(a, to_phase=Phase.SCHEDULED, reason="Admitted"),
                svc.StatusChange(b, to_phase=Phase.READY, reason="Skipped"),
                svc.StatusChange(c, {"message": "waiting"}),
            ],
        )
        await uow.commit()
    assert isinstance(results[0], AgentRecord) and results[0].phase is Phase.SCHEDULED
    assert isinstance(results[1], IllegalTransition)
    assert isinstance(results[2], AgentRecord) and results[2].status.message == "waiting"
    assert db.committed.agents[b.id].phase is Phase.CREATED


async def test_a_status_write_without_a_phase_change_writes_no_event(
    db: FakeDatabase, agent: AgentRecord
) -> None:
    before = len(db.committed.events)
    async with db.uow() as uow:
        updated = await svc.update_status(uow, agent, message="pulling image")
        await uow.commit()
    assert updated.status.message == "pulling image"
    assert len(db.committed.events) == before


async def test_an_unchanged_status_is_not_written(db: FakeDatabase, agent: AgentRecord) -> None:
    async with db.uow() as uow:
        same = await svc.update_status(uow, agent, message=agent.status.message)
        await uow.commit()
    assert same.resource_version == agent.resource_version


# -- delete ------------------------------------------------------------------------------------


async def test_deleting_an_unknown_agent_is_agent_not_found(db: FakeDatabase) -> None:
    async with db.uow() as uow:
        with pytest.raises(AgentNotFound) as raised:
            await svc.delete_agent(uow, TENANT, "nobody")
    assert raised.value.code == "AGENT_NOT_FOUND"


async def test_deleting_moves_the_agent_to_terminating_with_a_deletion_time(
    db: FakeDatabase, agent: AgentRecord
) -> None:
    async with db.uow() as uow:
        deleted = await svc.delete_agent(uow, TENANT, "worker")
    assert deleted.phase is Phase.TERMINATING and deleted.deletion_requested_at is not None
    assert db.committed.agents[agent.id] == deleted
    assert db.committed.events[-1].payload["to_phase"] == "Terminating"


async def test_deleting_keeps_the_record_until_the_sandbox_is_gone(
    db: FakeDatabase, agent: AgentRecord
) -> None:
    async with db.uow() as uow:
        await svc.delete_agent(uow, TENANT, "worker")
    assert agent.id in db.committed.agents
    assert "agent.deleted" not in db.event_types()


async def test_deleting_twice_writes_the_request_once(db: FakeDatabase, agent: AgentRecord) -> None:
    for _ in range(2):
        async with db.uow() as uow:
            await svc.delete_agent(uow, TENANT, "worker")
    assert db.event_types().count("agent.phase_changed") == 2  # Created, then Terminating


async def test_deleting_at_a_stale_resource_version_is_a_conflict(
    db: FakeDatabase, agent: AgentRecord
) -> None:
    async with db.uow() as uow:
        with pytest.raises(Conflict):
            await svc.delete_agent(uow, TENANT, "worker", expected_resource_version="99")
    assert db.committed.agents[agent.id].phase is Phase.CREATED


async def test_finalizing_a_deletion_removes_the_record_and_writes_agent_deleted(
    db: FakeDatabase, agent: AgentRecord
) -> None:
    async with db.uow() as uow:
        terminating = await svc.delete_agent(uow, TENANT, "worker")
    async with db.uow() as uow:
        await svc.finalize_deletion(uow, terminating)
    assert db.committed.agents == {}
    assert db.event_types()[-1] == "agent.deleted"
    assert db.audit_actions()[-1] == "agent.delete"
    assert db.committed.transitions[-1][1:4] == ("Terminating", "Deleted", "SandboxRemoved")


async def test_a_deleted_name_can_be_used_again(db: FakeDatabase, agent: AgentRecord) -> None:
    async with db.uow() as uow:
        await svc.finalize_deletion(uow, await svc.delete_agent(uow, TENANT, "worker"))
    async with db.uow() as uow:
        again = await svc.apply_agent(uow, TENANT, manifest(), create_only=True)
    assert again.created and again.agent.id != agent.id


# -- from Kubernetes (the operator's use case) --------------------------------------------------


async def from_kubernetes(
    db: FakeDatabase, uid: str, generation: int, **spec: Any
) -> svc.ApplyResult:
    async with db.uow() as uow:
        return await svc.apply_from_kubernetes(
            uow, TENANT, manifest(**spec), uid=uid, generation=generation
        )


async def test_an_agent_from_kubernetes_carries_its_uid_and_generation(db: FakeDatabase) -> None:
    result = await from_kubernetes(db, "uid-1", 1)
    assert result.agent.annotations[svc.KUBERNETES_UID] == "uid-1"
    assert result.agent.annotations[svc.KUBERNETES_GENERATION] == "1"


async def test_a_repeated_or_late_generation_from_kubernetes_changes_nothing(
    db: FakeDatabase,
) -> None:
    await from_kubernetes(db, "uid-1", 2, priority=2)
    before = len(db.committed.events)
    late = await from_kubernetes(db, "uid-1", 1, priority=1)
    assert not late.changed and late.agent.spec.priority == 2
    assert len(db.committed.events) == before


async def test_a_newer_generation_from_kubernetes_updates_the_agent(db: FakeDatabase) -> None:
    await from_kubernetes(db, "uid-1", 1)
    newer = await from_kubernetes(db, "uid-1", 2, priority=3)
    assert newer.changed and newer.agent.spec.priority == 3


async def test_kubernetes_does_not_adopt_an_agent_made_through_the_api(
    db: FakeDatabase, agent: AgentRecord
) -> None:
    with pytest.raises(AlreadyExists):
        await from_kubernetes(db, "uid-1", 1)


async def test_a_name_still_held_by_an_earlier_custom_resource_is_a_conflict(
    db: FakeDatabase,
) -> None:
    await from_kubernetes(db, "uid-old", 1)
    with pytest.raises(Conflict):
        await from_kubernetes(db, "uid-new", 1)
