"""The tenant use cases of controlplane/service/tenants.py (tenants and their quota) as a
specification, against the in-memory UnitOfWork of tests/unit/fakes.py.

A quota names any of `agents`, `cpu_millis`, `memory_bytes`; absent means no limit. It is
enforced at admission (domain/scheduling/admission.py, tests/unit/test_admission.py); here,
how it is stored and changed.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from controlplane.domain.access import Role
from controlplane.domain.errors import AlreadyExists, Conflict, TenantNotEmpty, TenantNotFound
from controlplane.domain.events.envelope import utcnow
from controlplane.domain.records import TenantRecord, TokenRecord
from controlplane.service import agents as agent_service
from controlplane.service import tenants as svc
from tests.unit.fakes import FakeDatabase

QUOTA = {"agents": 10, "cpu_millis": 4000, "memory_bytes": 8 * 2**30}


@pytest.fixture
def db() -> FakeDatabase:
    return FakeDatabase()


async def create(
    db: FakeDatabase, name: str = "team-a", quota: dict[str, int] | None = None
) -> TenantRecord:
    async with db.uow() as uow:
        return await svc.create_tenant(uow, name, quota)


async def test_a_tenant_is_created_with_its_quota(db: FakeDatabase) -> None:
    record = await create(db, quota=QUOTA)
    assert record.quota == QUOTA and record.resource_version == 1
    assert db.committed.tenants["team-a"].quota == QUOTA


async def test_a_tenant_without_a_quota_has_no_limit(db: FakeDatabase) -> None:
    assert (await create(db)).quota == {}


async def test_creating_a_tenant_writes_tenant_created_with_the_quota_and_an_audit_entry(
    db: FakeDatabase,
) -> None:
    await create(db, quota=QUOTA)
    (event,) = db.committed.events
    assert (event.event_type, event.payload) == (
        "tenant.created",
        {"name": "team-a", "quota": QUOTA},
    )
    (audit,) = db.committed.audit
    assert (audit.entry.action, audit.entry.event_id) == ("tenant.create", event.event_id)


async def test_a_taken_tenant_name_is_already_exists(db: FakeDatabase) -> None:
    await create(db)
    with pytest.raises(AlreadyExists):
        await create(db)
    assert db.event_types() == ["tenant.created"]


async def test_setting_a_quota_replaces_it_and_bumps_the_resource_version(
    db: FakeDatabase,
) -> None:
    await create(db, quota=QUOTA)
    async with db.uow() as uow:
        record = await svc.set_tenant_quota(uow, "team-a", {"agents": 2})
    assert record.quota == {"agents": 2} and record.resource_version == 2
    assert db.committed.tenants["team-a"].quota == {"agents": 2}


async def test_setting_a_quota_writes_quota_changed_and_audits_the_new_quota(
    db: FakeDatabase,
) -> None:
    await create(db)
    async with db.uow() as uow:
        await svc.set_tenant_quota(uow, "team-a", {"agents": 2})
    event = db.committed.events[-1]
    assert (event.event_type, event.payload["quota"]) == ("tenant.quota_changed", {"agents": 2})
    audit = db.committed.audit[-1].entry
    assert (audit.action, audit.details) == ("tenant.set_quota", {"quota": {"agents": 2}})


async def test_a_quota_set_at_a_stale_resource_version_is_a_conflict(db: FakeDatabase) -> None:
    await create(db, quota=QUOTA)
    async with db.uow() as uow:
        with pytest.raises(Conflict):
            await svc.set_tenant_quota(uow, "team-a", {"agents": 1}, expected_resource_version=5)
    assert db.committed.tenants["team-a"].quota == QUOTA


async def test_the_quota_of_an_unknown_tenant_is_tenant_not_found(db: FakeDatabase) -> None:
    async with db.uow() as uow:
        with pytest.raises(TenantNotFound) as raised:
            await svc.set_tenant_quota(uow, "nobody", {"agents": 1})
    assert raised.value.code == "TENANT_NOT_FOUND"


async def test_a_tenant_with_agents_cannot_be_deleted(db: FakeDatabase) -> None:
    manifest = {
        "apiVersion": "agentos.io/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": "worker"},
        "spec": {"image": "registry.example/agent:1"},
    }
    async with db.uow() as uow:
        await agent_service.apply_agent(uow, "team-a", manifest)
    async with db.uow() as uow:
        with pytest.raises(TenantNotEmpty):
            await svc.delete_tenant(uow, "team-a")
    assert "team-a" in db.committed.tenants


async def test_deleting_a_tenant_revokes_its_tokens_and_writes_tenant_deleted(
    db: FakeDatabase,
) -> None:
    await create(db)
    now = utcnow()
    token = TokenRecord(
        "tok-1", "alice", "team-a", Role("admin"), False, now, "root", now + timedelta(1), None
    )
    async with db.uow() as uow:
        await uow.tokens.add(token, "hash")
        await uow.commit()
    async with db.uow() as uow:
        await svc.delete_tenant(uow, "team-a")
    assert "team-a" not in db.committed.tenants
    assert db.committed.tokens["tok-1"].revoked_at is not None
    assert db.event_types()[-1] == "tenant.deleted"
