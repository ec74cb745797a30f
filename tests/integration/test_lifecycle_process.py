"""The lifecycle end to end with real child processes (runtime class `process`), on real
PostgreSQL with the relay publishing to real NATS."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.data.tables import outbox
from controlplane.domain.errors import ValidationFailed
from controlplane.domain.events.envelope import OutboxState
from controlplane.domain.scheduling.admission import Node
from controlplane.runtimes.process import ProcessRuntime
from controlplane.service.tenants import create_tenant
from tests.integration.lifecycle_harness import control_plane, manifest
from tests.integration.outbox_helpers import stream_messages

pytestmark = [pytest.mark.postgres, pytest.mark.nats]

AGENT = str(Path(__file__).resolve().parents[2] / "examples" / "agents" / "heartbeat_agent.py")


def heartbeat(name: str, **spec: object) -> dict:
    config = spec.pop("config", {"heartbeat_period_s": 0.1})
    return manifest(
        name,
        command=[sys.executable, AGENT],
        runtime={"class": "process"},
        readiness={"heartbeat": {}, "periodSeconds": 0.5},
        config=config,
        **spec,
    )


@pytest.fixture
def runtimes(tmp_path: Path) -> dict:
    return {"process": ProcessRuntime(tmp_path / "sandboxes")}


async def test_agent_reaches_ready_through_every_phase_with_events_published(
    pg_engine: AsyncEngine, pg_url: str, nc: NATS, runtimes: dict
) -> None:
    async with control_plane(pg_engine, pg_url, nc, runtimes) as plane:
        await plane.apply("team-a", heartbeat("hello"))
        ready = await plane.wait_phase("team-a", "hello", "Ready")
        assert await plane.history(ready) == ["Created", "Scheduled", "Starting", "Ready"]
        async with pg_engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(outbox.c.event_type, outbox.c.state, outbox.c.sequence)
                    .where(outbox.c.aggregate_id == ready.id)
                    .order_by(outbox.c.sequence)
                )
            ).all()
    before_ready = rows[:-1]
    assert [r.event_type for r in rows][:2] == ["agent.created", "agent.phase_changed"]
    assert all(r.state == OutboxState.PUBLISHED for r in before_ready), "aligned with outbox"
    on_nats = [
        m["envelope"]
        for m in await stream_messages(nc.jetstream())
        if m["envelope"]["agent_id"] == ready.id
    ]
    assert [e["payload"].get("to_phase") for e in on_nats][1:5] == [
        "Created",
        "Scheduled",
        "Starting",
        "Ready",
    ]
    assert ready.status.node == "local" and ready.status.observedGeneration == 1
    assert {c["type"]: c["status"] for c in ready.status.conditions} == {
        "Scheduled": "True",
        "Ready": "True",
    }


async def test_killed_sandbox_fails_then_recovers_by_restart(
    pg_engine: AsyncEngine, pg_url: str, nc: NATS, runtimes: dict
) -> None:
    async with control_plane(pg_engine, pg_url, nc, runtimes) as plane:
        await plane.apply("team-a", heartbeat("phoenix"))
        ready = await plane.wait_phase("team-a", "phoenix", "Ready")
        status = await runtimes["process"].status(ready.status.sandboxID)
        os.kill(status.pid, signal.SIGKILL)
        again = await plane.wait_phase("team-a", "phoenix", "Ready", restartCount=1)
        history = await plane.history(again)
    assert history[4:] == ["Failed", "Created", "Scheduled", "Starting", "Ready"]
    assert again.status.sandboxID != ready.status.sandboxID
    assert (await runtimes["process"].status(ready.status.sandboxID)).state == "Missing", (
        "compensation removed the failed sandbox"
    )


async def test_restart_policy_never_leaves_the_agent_failed(
    pg_engine: AsyncEngine, pg_url: str, nc: NATS, runtimes: dict
) -> None:
    async with control_plane(pg_engine, pg_url, nc, runtimes) as plane:
        await plane.apply(
            "team-a", heartbeat("once", restartPolicy="Never", config={"fail_after_s": 0.3})
        )
        failed = await plane.wait_phase("team-a", "once", "Failed", reason="RestartPolicyNever")
    assert failed.status.restartCount == 0 and failed.status.exitCode == 3
    assert "exit code 3" in failed.status.message


async def test_after_max_restarts_the_agent_stays_failed_saying_so(
    pg_engine: AsyncEngine, pg_url: str, nc: NATS, runtimes: dict
) -> None:
    async with control_plane(pg_engine, pg_url, nc, runtimes) as plane:
        await plane.apply("team-a", heartbeat("flaky", maxRestarts=2, config={"fail_after_s": 0.2}))
        failed = await plane.wait_phase("team-a", "flaky", "Failed", reason="MaxRestartsExceeded")
        assert await runtimes["process"].list_sandboxes() == {}, "no sandbox left behind"
    assert failed.status.restartCount == 2
    assert "maxRestarts is 2" in failed.status.message


async def test_delete_removes_the_sandbox_and_then_the_record(
    pg_engine: AsyncEngine, pg_url: str, nc: NATS, runtimes: dict
) -> None:
    async with control_plane(pg_engine, pg_url, nc, runtimes) as plane:
        record = await plane.apply("team-a", heartbeat("doomed"))
        ready = await plane.wait_phase("team-a", "doomed", "Ready")
        pid = (await runtimes["process"].status(ready.status.sandboxID)).pid
        await plane.delete("team-a", "doomed")
        await plane.wait_gone("team-a", "doomed")
    assert await runtimes["process"].list_sandboxes() == {}
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    async with pg_engine.connect() as conn:
        types = (
            (
                await conn.execute(
                    select(outbox.c.event_type)
                    .where(outbox.c.aggregate_id == record.id)
                    .order_by(outbox.c.sequence)
                )
            )
            .scalars()
            .all()
        )
    assert types[-2:] == ["agent.phase_changed", "agent.deleted"]


async def test_agent_beyond_quota_waits_unschedulable_until_another_is_deleted(
    pg_engine: AsyncEngine, pg_url: str, nc: NATS, runtimes: dict
) -> None:
    async with control_plane(pg_engine, pg_url, nc, runtimes) as plane:
        async with plane.uow() as uow:
            await create_tenant(uow, "small", {"agents": 1})
        await plane.apply("small", heartbeat("first"))
        await plane.wait_phase("small", "first", "Ready")
        await plane.apply("small", heartbeat("second"))
        waiting = await plane.wait_phase("small", "second", "Created", reason="Unschedulable")
        [cond] = [c for c in waiting.status.conditions if c["type"] == "Scheduled"]
        assert (cond["status"], cond["reason"]) == ("False", "Unschedulable")
        assert "quota of 1 agents" in cond["message"]
        await plane.delete("small", "first")
        await plane.wait_phase("small", "second", "Ready")


async def test_node_capacity_is_respected(
    pg_engine: AsyncEngine, pg_url: str, nc: NATS, runtimes: dict
) -> None:
    node = Node("tiny", cpu_millis=1000, memory_bytes=2**30)
    async with control_plane(pg_engine, pg_url, nc, runtimes, node=node) as plane:
        big = {"requests": {"cpu": "600m"}}
        await plane.apply("team-a", heartbeat("big-1", resources=big))
        await plane.wait_phase("team-a", "big-1", "Ready")
        await plane.apply("team-a", heartbeat("big-2", resources=big))
        waiting = await plane.wait_phase("team-a", "big-2", "Created", reason="Unschedulable")
    assert "no node has 600m cpu" in waiting.status.message


@pytest.mark.parametrize(
    ("edit", "pointer"),
    [
        (lambda m: m["spec"].update(colour="blue"), "/spec/colour"),
        (
            lambda m: m["spec"].update(resources={"limits": {"cpu": "lots"}}),
            "/spec/resources/limits/cpu",
        ),
        (lambda m: m["spec"].update(runtime={"class": "kata"}), "/spec/runtime/class"),
        (lambda m: m["metadata"].update(name="Not_DNS"), "/metadata/name"),
        (lambda m: m["spec"].pop("image"), "/spec/image"),
        (lambda m: m["spec"].update(image="oci-archive:images/a.tar"), "/spec/image"),
    ],
)
async def test_bad_manifest_is_refused_naming_the_field_and_nothing_is_created(
    pg_engine: AsyncEngine, pg_url: str, runtimes: dict, edit, pointer: str
) -> None:
    bad = heartbeat("bad")
    edit(bad)
    async with control_plane(pg_engine, pg_url, None, runtimes) as plane:
        with pytest.raises(ValidationFailed) as caught:
            await plane.apply("team-a", bad)
        async with plane.uow() as uow:
            assert await uow.agents.list() == []
            assert await uow.tenants.find("team-a") is None
    assert pointer in [e.pointer for e in caught.value.errors]
    async with pg_engine.connect() as conn:
        assert (await conn.execute(select(outbox.c.id))).first() is None
