"""The hot queries use indexes: with enough rows (and ANALYZE) that PostgreSQL would scan a
table without one, no plan of theirs holds a Seq Scan of a large table.

Each query is the repository's own: the statements a call sends are captured on their way
to the driver and explained with their parameters (EXPLAIN (FORMAT JSON), no ANALYZE).
architecture/scaling.md shows what the figures look like at 100,000 agents (bench-scale).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from controlplane.data.outbox.change_feed import OutboxFeed
from controlplane.data.outbox.relay_store import RelayStore
from controlplane.data.repositories.agents import AgentRepository
from controlplane.data.repositories.idempotency import IdempotencyRepository
from controlplane.data.repositories.runs import RunRepository
from controlplane.domain.agents.model import AgentStatus, parse_agent
from controlplane.domain.events.envelope import utcnow
from controlplane.domain.records import AgentRecord
from controlplane.domain.selectors import parse_selector
from harness.bulk import agent_name, fill_agents, fill_runs

pytestmark = pytest.mark.postgres

TENANT = "plans"
AGENTS = 20_000  # 200,000 outbox rows, 60,000 transitions
RUNS = 20_000  # 60,000 steps, 20,000 idempotency keys
RUN_AGGREGATES = 200_000
LARGE = {
    "agents",
    "agent_transitions",
    "aggregate_sequences",
    "outbox",
    "runs",
    "run_steps",
    "idempotency_keys",
}

TEMPLATE = {
    "apiVersion": "agentos.io/v1alpha1",
    "kind": "Agent",
    "metadata": {"name": "template"},
    "spec": {"image": "bench/none", "runtime": {"class": "runc"}, "command": ["true"]},
}


@pytest.fixture
async def filled(pg_engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    async with pg_engine.begin() as conn:
        now = utcnow()
        await conn.execute(
            text("INSERT INTO tenants (name, created_at, updated_at) VALUES (:t, :now, :now)"),
            {"t": TENANT, "now": now},
        )
        agent = parse_agent(TEMPLATE)
        await AgentRepository(conn).add_many(
            [
                AgentRecord(
                    "template", TENANT, "template", {}, {}, agent.spec,
                    AgentStatus(phase="Running"), 1, 1, now, None,
                )
            ]
        )  # fmt: skip
        await fill_agents(conn, TENANT, AGENTS)
        await fill_runs(conn, TENANT, AGENTS, RUNS)
        # Every run is an aggregate too: the relay's claim must not scan them all (at 20,000
        # aggregates a scan and 500 index lookups cost the planner about the same).
        await conn.execute(
            text(
                "INSERT INTO aggregate_sequences (aggregate_type, aggregate_id, last_sequence) "
                "SELECT 'run', md5('r' || i)::uuid::text, 1 FROM generate_series(1, :n) AS i"
            ),
            {"n": RUN_AGGREGATES},
        )
    async with pg_engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("ANALYZE"))
    yield pg_engine


async def plans_of(
    engine: AsyncEngine, call: Callable[[AsyncConnection], Awaitable[Any]]
) -> list[tuple[str, list[dict[str, Any]]]]:
    """(statement, plan) of each statement `call` sends on a connection of `engine`."""
    sent: list[tuple[str, Any]] = []

    def capture(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, _many: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH", "UPDATE", "DELETE")):
            sent.append((statement, params))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    try:
        async with engine.connect() as conn:
            await call(conn)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", capture)
    plans = []
    async with engine.connect() as conn:
        for statement, params in sent:
            result = await conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", params)
            plans.append((statement, result.scalar_one()))
    return plans


def seq_scans(node: dict[str, Any]) -> list[str]:
    """The large tables a plan node (and those below it) scans sequentially."""
    found = []
    if node.get("Node Type") == "Seq Scan" and node.get("Relation Name") in LARGE:
        found.append(node["Relation Name"])
    for child in node.get("Plans", []):
        found += seq_scans(child)
    return found


async def assert_indexed(
    engine: AsyncEngine, call: Callable[[AsyncConnection], Awaitable[Any]]
) -> None:
    plans = await plans_of(engine, call)
    assert plans, "the call sent no statement"
    for statement, plan in plans:
        scanned = seq_scans(plan[0]["Plan"])
        assert not scanned, f"Seq Scan of {scanned} in:\n{statement}\n{plan}"


MIDDLE = agent_name(AGENTS // 2)


async def test_agent_get_by_tenant_and_name_uses_an_index(filled: AsyncEngine) -> None:
    async def get(conn: AsyncConnection) -> None:
        await AgentRepository(conn).get_with_history(TENANT, MIDDLE)
        await AgentRepository(conn).find(TENANT, MIDDLE)

    await assert_indexed(filled, get)


async def test_agent_list_pages_use_an_index(filled: AsyncEngine) -> None:
    async def pages(conn: AsyncConnection) -> None:
        repo = AgentRepository(conn)
        await repo.page(TENANT, after=None, limit=100)
        await repo.page(TENANT, after=MIDDLE, limit=100)

    await assert_indexed(filled, pages)


async def test_agent_list_with_a_label_selector_uses_an_index(filled: AsyncEngine) -> None:
    async def pages(conn: AsyncConnection) -> None:
        repo = AgentRepository(conn)
        selector = parse_selector("team=t3")
        await repo.page(TENANT, after=None, limit=100, requirements=selector)
        await repo.page(TENANT, after=MIDDLE, limit=100, requirements=selector)

    await assert_indexed(filled, pages)


async def test_the_change_feed_of_a_watch_from_now_uses_an_index(filled: AsyncEngine) -> None:
    async with filled.connect() as conn:
        top = int((await conn.execute(text("SELECT max(id) FROM outbox"))).scalar_one())
    feed = OutboxFeed(filled)

    async def watch(conn: AsyncConnection) -> None:
        await feed.current_horizon()
        horizon = await feed.horizon(top - 100)
        await feed.read(top - 100, horizon, tenant=TENANT, aggregate_type="agent")

    await assert_indexed(filled, watch)


async def test_runs_of_an_agent_list_uses_an_index(filled: AsyncEngine) -> None:
    async def runs(conn: AsyncConnection) -> None:
        await RunRepository(conn).page(TENANT, limit=50, agent=MIDDLE)

    await assert_indexed(filled, runs)


async def test_steps_of_a_run_use_an_index(filled: AsyncEngine) -> None:
    async with filled.connect() as conn:
        run_id = (await conn.execute(text("SELECT md5('r' || 77)::uuid::text"))).scalar_one()

    async def steps(conn: AsyncConnection) -> None:
        await RunRepository(conn).journal(run_id)
        await RunRepository(conn).step(run_id, "call-2")

    await assert_indexed(filled, steps)


async def test_the_relays_claim_and_pending_queries_use_an_index(filled: AsyncEngine) -> None:
    store = RelayStore(filled)
    keys = await store.claim("plans", 0.001, 256)
    assert keys

    async def relay(conn: AsyncConnection) -> None:
        await store.claim("plans-2", 0.001, 256)
        await store.pending(keys, 32)

    await assert_indexed(filled, relay)


async def test_the_idempotency_lookup_uses_an_index(filled: AsyncEngine) -> None:
    async def lookup(conn: AsyncConnection) -> None:
        await IdempotencyRepository(conn).find(TENANT, "bench", "key-77", utcnow())

    await assert_indexed(filled, lookup)
