"""The operator's use case on real PostgreSQL and on SQLite: an Agent resource is applied to
the control plane keyed by its uid and generation, so repeats and late deliveries change
nothing, and a name held by another resource or by a REST-made agent is not taken over."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.bootstrap import schema_registry
from controlplane.data.tables import outbox
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.errors import AlreadyExists, Conflict
from controlplane.service import agents as svc
from operators.agent.mirror import manifest_from_resource, resource_status


def resource(
    generation: int, image: str = "registry.example/a:1", uid: str = "uid-1"
) -> dict[str, Any]:
    return {
        "apiVersion": "agentos.io/v1alpha1",
        "kind": "Agent",
        "metadata": {
            "name": "mirrored",
            "namespace": "team",
            "uid": uid,
            "generation": generation,
            "resourceVersion": "991",
            "labels": {"app": "x"},
            "annotations": {
                "kopf.zalando.org/last-handled-configuration": "{}",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "team.example/owner": "ana",
            },
            "finalizers": ["agentos.io/finalizer"],
        },
        "spec": {"image": image},
        "status": {"phase": "Ready"},
    }


async def apply(engine: AsyncEngine, body: dict[str, Any]) -> svc.ApplyResult:
    meta = body["metadata"]
    async with UnitOfWork(engine, schema_registry(), principal="system:operator") as uow:
        return await svc.apply_from_kubernetes(
            uow,
            "team",
            manifest_from_resource(body),
            uid=meta["uid"],
            generation=meta["generation"],
        )


async def events(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(outbox))).scalar_one())


def test_only_the_declared_part_of_a_resource_reaches_the_control_plane() -> None:
    manifest = manifest_from_resource(resource(1))
    assert manifest["metadata"] == {
        "name": "mirrored",
        "namespace": "team",
        "labels": {"app": "x"},
        "annotations": {"team.example/owner": "ana"},
    }
    assert "status" not in manifest


async def test_a_repeated_or_older_generation_changes_nothing(engine: AsyncEngine) -> None:
    first = await apply(engine, resource(1))
    assert first.created
    written = await events(engine)
    again = await apply(engine, resource(1, image="registry.example/a:2"))
    assert not again.changed and again.agent.spec.image == "registry.example/a:1"
    newer = await apply(engine, resource(2, image="registry.example/a:2"))
    assert newer.changed and newer.agent.generation == 2
    assert newer.agent.annotations[svc.KUBERNETES_GENERATION] == "2"
    late = await apply(engine, resource(1))
    assert not late.changed and late.agent.spec.image == "registry.example/a:2"
    assert await events(engine) == written + 1  # only generation 2's agent.updated


async def test_a_name_held_by_another_resource_is_a_conflict(engine: AsyncEngine) -> None:
    await apply(engine, resource(1, uid="uid-old"))
    with pytest.raises(Conflict, match="uid-old"):
        await apply(engine, resource(1, uid="uid-new"))


async def test_an_agent_made_through_the_api_is_not_taken_over(engine: AsyncEngine) -> None:
    async with UnitOfWork(engine, schema_registry()) as uow:
        await svc.apply_agent(uow, "team", manifest_from_resource(resource(1)))
    with pytest.raises(AlreadyExists, match="not made from Kubernetes"):
        await apply(engine, resource(1))


async def test_status_reports_the_resource_generation_once_observed(engine: AsyncEngine) -> None:
    first = await apply(engine, resource(7))
    status = resource_status(first.agent)
    # The control plane's generation is 1, the resource's 7: status speaks the resource's.
    assert first.agent.generation == 1
    assert "observedGeneration" not in status  # not yet acted on
    observed = first.agent.status.model_copy(update={"observedGeneration": 1})
    acted = resource_status(dataclasses.replace(first.agent, status=observed))
    assert acted["observedGeneration"] == 7
    assert acted["agentID"] == first.agent.id
