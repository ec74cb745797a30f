"""A run's life around the handler: checkpoints across attempts, cancellation, deadline,
concurrency, the end of a run elsewhere, a graceful stop, and a refused credential."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from agentos_sdk import AuthenticationError, Run

from tests.unit.sdk.conftest import agent_for, serving
from tests.unit.sdk.fake_gateway import FakeGateway


async def until(condition: Any, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


def blocking_agent(gateway: FakeGateway, seen: list[str], **settings: Any) -> Any:
    """An agent whose handler records what it sees and waits until it is cancelled."""
    agent = agent_for(gateway, **settings)

    @agent.run
    async def handle(run: Run) -> Any:
        seen.append("started")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append(f"cancelled:{run.cancel_reason}:{run.cancelled}")
            raise
        return "slept"

    return agent


async def test_the_checkpoint_state_arrives_on_the_next_attempt(gateway: FakeGateway) -> None:
    effects: list[str] = []
    attempts: list[tuple[int, Any]] = []
    first_attempt_checkpointed = asyncio.Event()

    def download() -> int:
        effects.append("download")
        return 3

    def build() -> Any:
        agent = agent_for(gateway, drain_seconds=0)

        @agent.run
        async def handle(run: Run) -> Any:
            attempts.append((run.attempt, run.state))
            done = await run.step("download", download)
            await run.checkpoint({"downloaded": done})
            if run.attempt == 1:
                first_attempt_checkpointed.set()
                await asyncio.sleep(30)  # the sandbox "dies" here
            return {"state": run.state}

        return agent

    run = gateway.submit(None)
    async with serving(build()):
        await first_attempt_checkpointed.wait()
    # The agent stopped with the run in flight: abandoned, released, redelivered.
    assert run.result is None and run.releases == 1 and run.attempt == 2
    async with serving(build()):
        await gateway.wait_done(run.name)
    assert attempts == [(1, None), (2, {"downloaded": 3})]
    assert effects == ["download"]
    assert run.result == {"output": {"state": {"downloaded": 3}}}
    assert run.checkpoints[0] == {"state": {"downloaded": 3}, "callId": "1"}


async def test_a_cancellation_reaches_the_handler_and_nothing_is_reported(
    gateway: FakeGateway,
) -> None:
    seen: list[str] = []
    run = gateway.submit(None)
    async with serving(blocking_agent(gateway, seen)):
        await until(lambda: seen == ["started"])
        run.cancel_requested = True
        await until(lambda: len(seen) == 2)
        heartbeats = run.heartbeats
        await asyncio.sleep(0.2)
    assert seen == ["started", "cancelled:canceled:True"]
    assert run.result is None and run.steps == [] and run.releases == 0
    assert run.heartbeats == heartbeats  # no heartbeat after the cancellation


async def test_the_deadline_cancels_the_handler_and_nothing_is_reported(
    gateway: FakeGateway,
) -> None:
    seen: list[str] = []
    deadline = datetime.now(UTC) + timedelta(seconds=0.3)
    run = gateway.submit(None, deadline=deadline)
    async with serving(blocking_agent(gateway, seen, heartbeat_seconds=5)):
        await until(lambda: len(seen) == 2)
    assert seen == ["started", "cancelled:deadline:True"]
    assert datetime.now(UTC) >= deadline
    assert run.result is None


async def test_a_heartbeat_answering_run_finished_stops_the_handler(
    gateway: FakeGateway,
) -> None:
    seen: list[str] = []
    run = gateway.submit(None)
    async with serving(blocking_agent(gateway, seen)):
        await until(lambda: seen == ["started"])
        run.finished = True  # ended by the control plane (e.g. TimedOut there)
        await until(lambda: len(seen) == 2)
    assert seen == ["started", "cancelled:finished:True"]
    assert run.result is None


async def test_concurrency_two_never_runs_more_than_two_at_once(gateway: FakeGateway) -> None:
    agent = agent_for(gateway, concurrency=2)
    running = 0
    peak = 0

    @agent.run
    async def handle(run: Run) -> Any:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1
        return run.input

    runs = [gateway.submit(i) for i in range(6)]
    async with serving(agent):
        for run in runs:
            await gateway.wait_done(run.name)
    assert peak == 2
    assert [run.result for run in runs] == [{"output": i} for i in range(6)]


async def test_a_stop_lets_runs_in_flight_finish_within_the_drain(gateway: FakeGateway) -> None:
    agent = agent_for(gateway, drain_seconds=5)
    started = asyncio.Event()

    @agent.run
    async def handle(run: Run) -> Any:
        started.set()
        await asyncio.sleep(0.2)
        return "finished"

    run = gateway.submit(None)
    async with serving(agent):
        await started.wait()
    assert run.result == {"output": "finished"} and run.releases == 0


async def test_a_refused_token_stops_serve_with_a_clear_error(gateway: FakeGateway) -> None:
    agent = agent_for(gateway, token="revoked")

    @agent.run
    async def handle(run: Run) -> Any:
        return None

    with pytest.raises(AuthenticationError) as caught:
        await asyncio.wait_for(agent.serve_async(asyncio.Event()), 5)
    assert caught.value.status == 401 and caught.value.code == "UNAUTHENTICATED"
    assert "AGENTOS_AGENT_TOKEN" in str(caught.value)


async def test_an_unreachable_gateway_is_retried_until_the_stop(gateway: FakeGateway) -> None:
    url = gateway.url
    await gateway.stop()
    agent = agent_for(gateway, gateway_url=url)

    @agent.run
    async def handle(run: Run) -> Any:
        return None

    stop = asyncio.Event()
    task = asyncio.create_task(agent.serve_async(stop))
    await asyncio.sleep(0.3)
    assert not task.done()
    stop.set()
    await asyncio.wait_for(task, 5)


AGENT_PROGRAM = """
import asyncio, sys
from agentos_sdk import Agent, Run
agent = Agent(drain_seconds=0.2)

@agent.run
async def handle(run: Run) -> str:
    print("started", flush=True)
    await asyncio.sleep(30)
    return "too late"

agent.serve()
print("stopped", flush=True)
"""


async def test_sigterm_stops_serve_and_releases_the_run_in_flight(
    gateway: FakeGateway,
) -> None:
    env = {
        **os.environ,
        "AGENTOS_GATEWAY_URL": gateway.url,
        "AGENTOS_AGENT_TOKEN": gateway.token,
        "AGENTOS_HEARTBEAT_SECONDS": "0.1",
    }
    run = gateway.submit(None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", AGENT_PROGRAM, env=env, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    try:
        assert await asyncio.wait_for(process.stdout.readline(), 10) == b"started\n"
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
    assert (await process.stdout.read()).endswith(b"stopped\n")
    assert run.result is None and run.releases == 1 and run.attempt == 2
