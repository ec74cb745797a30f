"""The live event stream of a run (`GET .../runs/{run}/events`, server-sent events) over a
real HTTP server on loopback, on PostgreSQL and SQLite: resumable with `Last-Event-ID`
(every event exactly once, in order), several followers, the end after the terminal event.
The run is moved along through the service layer, as the gateway would."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from controlplane.domain.runs.lifecycle import RunPhase, RunReason
from harness.ports import free_port
from tests.integration.api_harness import Api, running_api
from tests.integration.runs_helpers import (
    advance,
    agent,
    db_url_fixture,  # noqa: F401  (the fixture `db_url`)
    record_step,
)

T = "/api/v1/tenants/team-a"


@contextlib.asynccontextmanager
async def serving(api: Api) -> AsyncIterator[str]:
    """The API on a loopback port in this event loop; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(api.app, host="127.0.0.1", port=port, log_config=None, lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)  # startup, not synchronisation with the code under test
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def sse(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The events of a text/event-stream response: {id, event, data}."""
    fields: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields:
                yield {**fields, "data": json.loads(fields["data"])}
            fields = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            fields[key] = value


async def read(client: httpx.AsyncClient, url: str, n: int | None, **headers: str) -> list[Any]:
    """`n` events of the stream (then disconnect), or all of them until it ends (None)."""
    got: list[dict[str, Any]] = []
    async with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event in sse(response):
            got.append(event)
            if n is not None and len(got) == n:
                break
    return got


async def test_a_follower_that_reconnects_with_last_event_id_gets_every_event_once_in_order(
    db_url: str, tmp_path: Path
) -> None:
    async with running_api(db_url, tmp_path, watch_poll_interval_s=0.02) as api:
        token = await api.token("alice", tenant="team-a", role="editor")
        headers = {"Authorization": f"Bearer {token}"}
        async with serving(api) as base, httpx.AsyncClient(base_url=base, headers=headers) as c:
            assert (await c.post(f"{T}/agents", json=agent("worker"))).status_code == 201
            made = await c.post(f"{T}/agents/worker/runs", json={"input": 1})
            name = made.json()["metadata"]["name"]
            url = f"{T}/agents/worker/runs/{name}/events"

            async def follow_while_it_runs() -> list[Any]:
                return await read(c, url, None)

            whole = asyncio.create_task(follow_while_it_runs())  # a second follower
            first = await read(c, url, 1)  # run.created, then this client goes away
            await advance(api, "team-a", name, RunPhase.DISPATCHED, RunReason.DISPATCHED)
            await advance(api, "team-a", name, RunPhase.RUNNING, RunReason.STARTED)
            resumed = read(c, url, 3, **{"Last-Event-ID": first[-1]["id"]})
            waiting = asyncio.create_task(resumed)  # dispatched, started, and one to wait for
            await record_step(api, "team-a", name, "step-1")
            second = await waiting
            await record_step(api, "team-a", name, "step-2")
            await advance(api, "team-a", name, RunPhase.SUCCEEDED, RunReason.COMPLETED)
            rest = await read(c, url, None, **{"Last-Event-ID": second[-1]["id"]})
            after_the_end = await read(c, url, None, **{"Last-Event-ID": rest[-1]["id"]})
            everything = await asyncio.wait_for(whole, 30)

    seen = first + second + rest
    types = [e["event"] for e in seen]
    assert types == [
        "run.created",
        "run.dispatched",
        "run.started",
        "run.step_recorded",
        "run.step_recorded",
        "run.succeeded",
    ]
    ids = [int(e["id"]) for e in seen]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert 2 not in ids, "the internal run.dispatch (sequence 2) is never shown"
    assert [e["data"]["type"] for e in seen] == types
    assert [e["data"]["step"]["callId"] for e in seen if "step" in e["data"]] == [
        "step-1",
        "step-2",
    ]
    assert seen[-1]["data"]["run"]["status"]["phase"] == "Succeeded"
    assert seen[1]["data"]["fromPhase"] == "Pending" and seen[1]["data"]["toPhase"] == "Dispatched"
    assert after_the_end == [], "the stream of an ended run ends at once"
    assert everything == seen, "a follower from the start sees the same events"


async def test_the_stream_of_an_unknown_run_is_a_404_before_it_starts(
    db_url: str, tmp_path: Path
) -> None:
    async with running_api(db_url, tmp_path) as api:
        token = await api.token("alice", tenant="team-a", role="editor")
        async with api.client(token) as client:
            missing = await client.get(f"{T}/runs/run-000000000000/events")
            bad = await client.get(f"{T}/runs/x/events", headers={"Last-Event-ID": "abc"})
    assert missing.status_code == 404 and missing.json()["code"] == "RUN_NOT_FOUND"
    assert bad.status_code == 400
