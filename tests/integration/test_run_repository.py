"""RunRepository on real PostgreSQL and on SQLite: runs, filters and pages, optimistic
writes, the step journal (one row per callId, first write wins) and checkpoints."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from controlplane.data.repositories.runs import RunCursor, RunRepository
from controlplane.data.repositories.tenants import TenantRepository
from controlplane.domain.errors import AlreadyExists, Conflict, RunNotFound
from controlplane.domain.events.envelope import utcnow
from controlplane.domain.runs.lifecycle import RunPhase
from controlplane.domain.runs.model import RunRecord, RunSpec, RunStatus, Usage
from controlplane.domain.runs.steps import Step
from controlplane.domain.selectors import parse_selector

T0 = utcnow().replace(microsecond=0)


@pytest.fixture
async def conn(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with engine.connect() as connection:
        await connection.begin()
        await TenantRepository(connection).add("acme", {})
        await TenantRepository(connection).add("other", {})
        yield connection
        await connection.rollback()


def a_run(
    name: str,
    *,
    tenant: str = "acme",
    agent: str = "calc",
    seconds: int = 0,
    labels: dict[str, str] | None = None,
    timeout_s: int = 600,
) -> RunRecord:
    return RunRecord(
        id=str(uuid.uuid4()),
        tenant=tenant,
        agent_id=f"id-{agent}",
        agent=agent,
        name=name,
        labels=labels or {},
        spec=RunSpec(input={"q": name}, timeoutSeconds=timeout_s),
        status=RunStatus(),
        resource_version=1,
        created_at=T0 + timedelta(seconds=seconds),
    )


def a_step(call_id: str, **fields: Any) -> Step:
    return Step.model_validate(
        {
            "callId": call_id,
            "type": "tool",
            "name": "calculator",
            "input": {"expr": call_id},
            "status": "succeeded",
            "output": f"out-{call_id}",
            "startedAt": "2025-01-02T03:04:05Z",
            "endedAt": "2025-01-02T03:04:06Z",
            **fields,
        }
    )


async def test_a_run_reads_back_as_it_was_added(conn: AsyncConnection) -> None:
    repo = RunRepository(conn)
    run = a_run("r1", labels={"team": "x"})
    await repo.add(run)
    assert await repo.get("acme", "r1") == run
    assert await repo.get("acme", "r1", agent="calc") == run
    assert await repo.by_id(run.id) == run


async def test_a_run_of_another_agent_or_tenant_is_not_found(conn: AsyncConnection) -> None:
    repo = RunRepository(conn)
    await repo.add(a_run("r1"))
    with pytest.raises(RunNotFound):
        await repo.get("acme", "r1", agent="writer")
    with pytest.raises(RunNotFound):
        await repo.get("other", "r1")


async def test_a_name_is_taken_once_per_tenant(conn: AsyncConnection) -> None:
    repo = RunRepository(conn)
    await repo.add(a_run("r1"))
    await repo.add(a_run("r1", tenant="other"))
    with pytest.raises(AlreadyExists):
        await repo.add(a_run("r1", agent="writer"))


async def test_pages_go_newest_first_and_cover_every_run_once(conn: AsyncConnection) -> None:
    repo = RunRepository(conn)
    for i in range(7):
        await repo.add(a_run(f"r{i}", seconds=i // 2))  # pairs share a creation time
    seen: list[str] = []
    cursor = None
    while True:
        page = await repo.page("acme", limit=3, after=cursor)
        seen += [r.name for r in page]
        if len(page) < 3:
            break
        cursor = RunCursor.after(page[-1])
    assert sorted(seen) == [f"r{i}" for i in range(7)]
    assert len(seen) == len(set(seen))
    created = [(await repo.get("acme", n)).created_at for n in seen]
    assert created == sorted(created, reverse=True)


async def test_pages_filter_by_agent_phase_and_labels(conn: AsyncConnection) -> None:
    repo = RunRepository(conn)
    await repo.add(a_run("a", labels={"env": "prod"}))
    await repo.add(a_run("b", agent="writer", labels={"env": "dev"}))
    running = a_run("c", labels={"env": "prod"})
    await repo.add(running)
    await repo.set_phase(running, RunStatus(phase=RunPhase.DISPATCHED, attempt=1))
    await repo.add(a_run("d", tenant="other"))

    async def names(**filters: Any) -> set[str]:
        return {r.name for r in await repo.page("acme", limit=10, **filters)}

    assert await names() == {"a", "b", "c"}
    assert await names(agent="writer") == {"b"}
    assert await names(phases=[RunPhase.DISPATCHED]) == {"c"}
    assert await names(phases=[RunPhase.PENDING, RunPhase.DISPATCHED]) == {"a", "b", "c"}
    assert await names(requirements=parse_selector("env=prod")) == {"a", "c"}
    assert await names(agent="calc", requirements=parse_selector("env!=prod")) == set()


async def test_set_phase_writes_the_status_and_refuses_a_stale_record(
    conn: AsyncConnection,
) -> None:
    repo = RunRepository(conn)
    run = a_run("r1")
    await repo.add(run)
    status = RunStatus(phase=RunPhase.DISPATCHED, reason="Dispatched", attempt=1)
    stored = await repo.set_phase(run, status)
    assert stored.resource_version == 2
    assert await repo.get("acme", "r1") == stored
    with pytest.raises(Conflict):
        await repo.set_phase(run, RunStatus(phase=RunPhase.CANCELED))
    assert (await repo.get("acme", "r1")).phase is RunPhase.DISPATCHED


async def test_counts_runs_of_an_agent_by_phase(conn: AsyncConnection) -> None:
    repo = RunRepository(conn)
    for name in ("a", "b", "c"):
        await repo.add(a_run(name))
    await repo.add(a_run("w", agent="writer"))
    b = await repo.get("acme", "b")
    await repo.set_phase(b, RunStatus(phase=RunPhase.DISPATCHED, attempt=1))
    assert await repo.count("id-calc", [RunPhase.PENDING]) == 2
    assert await repo.count("id-calc", [RunPhase.PENDING, RunPhase.DISPATCHED]) == 3
    assert await repo.count("id-writer", [RunPhase.DISPATCHED]) == 0


async def test_overdue_runs_are_those_past_their_timeout(conn: AsyncConnection) -> None:
    repo = RunRepository(conn)
    await repo.add(a_run("short", timeout_s=5))
    await repo.add(a_run("long", timeout_s=600))
    due = await repo.overdue(T0 + timedelta(seconds=5), [RunPhase.PENDING])
    assert [r.name for r in due] == ["short"]
    assert await repo.overdue(T0 + timedelta(seconds=4), [RunPhase.PENDING]) == []
    assert await repo.overdue(T0 + timedelta(seconds=5), [RunPhase.RUNNING]) == []


async def test_the_journal_keeps_steps_in_order_with_their_usage(conn: AsyncConnection) -> None:
    repo = RunRepository(conn)
    run = a_run("r1")
    await repo.add(run)
    steps = [
        a_step("1", usage={"inputTokens": 3}),
        a_step("2", type="llm", parentCallId="1"),
        a_step("3", status="failed", output=None, error={"type": "ValueError"}),
    ]
    for step in steps:
        assert await repo.record_step(run.id, step) == (step, True)
    assert await repo.journal(run.id) == steps
    assert (await repo.journal(run.id))[0].usage == Usage(inputTokens=3)
    assert await repo.step(run.id, "2") == steps[1]
    assert await repo.step(run.id, "9") is None


async def test_a_step_recorded_again_keeps_its_first_output(conn: AsyncConnection) -> None:
    repo = RunRepository(conn)
    run = a_run("r1")
    await repo.add(run)
    first = a_step("1", output="first")
    await repo.record_step(run.id, first)
    again, written = await repo.record_step(run.id, a_step("1", output="second", attempt=2))
    assert (again, written) == (first, False)
    assert await repo.journal(run.id) == [first]


async def test_the_same_call_id_in_two_runs_is_two_steps(conn: AsyncConnection) -> None:
    repo = RunRepository(conn)
    one, two = a_run("r1"), a_run("r2")
    await repo.add(one)
    await repo.add(two)
    await repo.record_step(one.id, a_step("1"))
    assert (await repo.record_step(two.id, a_step("1")))[1] is True
    assert len(await repo.journal(two.id)) == 1


async def test_the_latest_checkpoint_is_the_one_loaded(conn: AsyncConnection) -> None:
    repo = RunRepository(conn)
    run = a_run("r1")
    await repo.add(run)
    assert await repo.load_checkpoint(run.id) is None
    await repo.save_checkpoint(run.id, {"done": [1]}, attempt=1)
    saved = await repo.save_checkpoint(run.id, {"done": [1, 2], "note": "ü"}, attempt=2)
    loaded = await repo.load_checkpoint(run.id)
    assert loaded is not None
    assert (loaded.state, loaded.attempt) == ({"done": [1, 2], "note": "ü"}, 2)
    assert abs(loaded.saved_at - saved.saved_at) < timedelta(milliseconds=1)
