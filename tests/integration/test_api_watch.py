"""List and watch of agents (Kubernetes API conventions) on real PostgreSQL: pagination,
label selectors, and a watch that, resumed from a resourceVersion after a disconnect, misses
no event — including events whose outbox id was taken by a transaction that committed late.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import select

from controlplane.bootstrap import schema_registry
from controlplane.data.outbox.change_feed import OutboxFeed
from controlplane.data.tables import outbox
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.events.envelope import NewEvent
from controlplane.service import agents as svc
from harness.ports import free_port
from harness.waiting import eventually
from tests.integration.api_harness import Api, manifest, running_api

pytestmark = pytest.mark.postgres
AGENTS = "/api/v1/tenants/team-a/agents"


@contextlib.asynccontextmanager
async def served(api: Api) -> AsyncIterator[str]:
    """The app on a real loopback socket (watch streams must be cut like a real client's)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(api.app, host="127.0.0.1", port=port, log_config=None, lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    await eventually(lambda: asyncio.sleep(0, server.started), 30, "uvicorn started")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def agent_event_ids(api: Api, after: int) -> list[str]:
    async with api.container.engine.connect() as conn:
        rows = await conn.execute(
            select(outbox.c.event_id)
            .where(outbox.c.aggregate_type == "agent", outbox.c.id > after)
            .order_by(outbox.c.id)
        )
        return list(rows.scalars())


async def read_events(
    base: str, token: str, since: str, until: Any, timeout_s: float = 30
) -> list[dict[str, Any]]:
    """Watch from `since` until `until(events)` holds, then disconnect."""
    seen: list[dict[str, Any]] = []
    params = {"watch": "true", "resourceVersion": since}
    async with (
        httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}) as c,
        c.stream("GET", AGENTS, params=params, timeout=timeout_s) as stream,
    ):
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("application/x-ndjson")
        async for line in stream.aiter_lines():
            if line:
                seen.append(json.loads(line))
            if until(seen):
                break
    return seen


async def test_list_pages_with_limit_and_continue_and_filters_by_label(
    pg_url: str, tmp_path: Path
) -> None:
    async with running_api(pg_url, tmp_path) as api:
        token = await api.token("e", tenant="team-a", role="editor")
        async with api.client(token) as c:
            for i in range(7):
                team = "red" if i % 2 else "blue"
                r = await c.post(AGENTS, json=manifest(f"a{i}", team=team, tier=f"t{i % 3}"))
                assert r.status_code == 201
            names, params = [], {"limit": "3"}
            while True:
                page = (await c.get(AGENTS, params=params)).json()
                assert len(page["items"]) <= 3
                names += [i["metadata"]["name"] for i in page["items"]]
                if "continue" not in page["metadata"]:
                    break
                params = {"limit": "3", "continue": page["metadata"]["continue"]}
            red = (await c.get(AGENTS, params={"labelSelector": "team=red"})).json()
            mixed = (
                await c.get(AGENTS, params={"labelSelector": "team!=red,tier in (t0, t2)"})
            ).json()
            bad = await c.get(AGENTS, params={"labelSelector": "team=="})
            bad_continue = await c.get(AGENTS, params={"continue": "garbage!"})
        assert names == [f"a{i}" for i in range(7)]
        assert [i["metadata"]["name"] for i in red["items"]] == ["a1", "a3", "a5"]
        assert [i["metadata"]["name"] for i in mixed["items"]] == ["a0", "a2", "a6"]
        # `team==` is `team` equal to the empty value: valid, and matches nothing here
        assert bad.status_code == 200 and bad.json()["items"] == []
        assert bad_continue.status_code == 400 and bad_continue.json()["code"] == "BAD_REQUEST"


async def test_a_watch_resumed_after_a_disconnect_misses_no_event(
    pg_url: str, tmp_path: Path
) -> None:
    async with running_api(pg_url, tmp_path) as api, served(api) as base:
        token = await api.token("w", tenant="team-a", role="editor")
        async with api.client(token) as c:
            start = (await c.get(AGENTS)).json()["metadata"]["resourceVersion"]
            for name in ("w1", "w2"):
                assert (await c.post(AGENTS, json=manifest(name))).status_code == 201
        first = await read_events(
            base, token, start, lambda seen: sum(e["type"] == "ADDED" for e in seen) >= 1
        )
        resume_from = first[-1]["resourceVersion"]
        # while nobody watches: another agent, a change, a deletion through to agent.deleted
        async with api.client(token) as c:
            assert (await c.post(AGENTS, json=manifest("w3"))).status_code == 201
            changed = manifest("w1")
            changed["spec"] = {**changed["spec"], "priority": 9}
            assert (await c.put(f"{AGENTS}/w1", json=changed)).status_code == 200
            assert (await c.delete(f"{AGENTS}/w2")).status_code == 202
        async with api.container.uow() as uow:
            record = await uow.agents.get("team-a", "w2")
            await svc.finalize_deletion(uow, record)
        expected = await agent_event_ids(api, int(start))
        second = await read_events(
            base,
            token,
            resume_from,
            lambda seen: len(first) + len(seen) >= len(expected),
        )
        got = [e["event"]["event_id"] for e in first + second if e["event"]]
        assert got == expected, "every event once, in order, across the disconnect"
        kinds = [(e["type"], e["object"]["metadata"]["name"]) for e in second]
        assert ("DELETED", "w2") in kinds and ("ADDED", "w3") in kinds
        assert kinds.count(("MODIFIED", "w1")) >= 1


async def test_the_feed_waits_for_a_writer_that_took_a_lower_id(
    pg_url: str, tmp_path: Path
) -> None:
    async with running_api(pg_url, tmp_path) as api:
        feed = OutboxFeed(api.container.engine)
        cursor = await feed.current_horizon()
        held = UnitOfWork(api.container.engine, schema_registry())
        await held.__aenter__()
        try:
            await held.outbox.add(
                NewEvent("tenant.created", "tenant", "slow", "slow", {"name": "slow", "quota": {}})
            )
            async with api.client(await api.token("e", tenant="team-a", role="editor")) as c:
                assert (await c.post(AGENTS, json=manifest("fast"))).status_code == 201
            waiting = asyncio.create_task(feed.horizon(cursor))
            done, _ = await asyncio.wait([waiting], timeout=0.5)
            assert not done, "the horizon must not pass an id whose writer is still open"
            await held.commit()
        finally:
            await held.__aexit__(None, None, None)
        horizon = await waiting
        async with api.container.engine.connect() as conn:
            ids = list(
                (await conn.execute(select(outbox.c.id).where(outbox.c.id > cursor))).scalars()
            )
        assert horizon == max(ids) and len(ids) == horizon - cursor, "no hole left behind"


async def test_the_feed_passes_the_hole_of_a_rolled_back_writer(
    pg_url: str, tmp_path: Path
) -> None:
    async with running_api(pg_url, tmp_path) as api:
        feed = OutboxFeed(api.container.engine)
        cursor = await feed.current_horizon()
        async with UnitOfWork(api.container.engine, schema_registry()) as uow:
            await uow.outbox.add(
                NewEvent("tenant.created", "tenant", "gone", "gone", {"name": "gone", "quota": {}})
            )  # no commit: rolled back, its id is a hole for ever
        async with api.client(await api.token("e", tenant="team-a", role="editor")) as c:
            assert (await c.post(AGENTS, json=manifest("after"))).status_code == 201
        horizon = await asyncio.wait_for(feed.horizon(cursor), 30)
        events = await feed.read(cursor, horizon, tenant="team-a", aggregate_type="agent")
        assert [e.payload["name"] for e in events] == ["after", "after"]
        async with api.container.engine.connect() as conn:
            ids = list(
                (await conn.execute(select(outbox.c.id).where(outbox.c.id > cursor))).scalars()
            )
        assert horizon == max(ids) and len(ids) == horizon - cursor - 1, "past the one hole"
