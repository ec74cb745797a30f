"""A run through the SDK against the FakeGateway: steps, results, redelivery, replay."""

from __future__ import annotations

from typing import Any

import pytest
from agentos_sdk import NonDeterminismError, Run, StepFailed

from tests.unit.sdk.conftest import agent_for, serving
from tests.unit.sdk.fake_gateway import FakeGateway


def recorded(name: str, call_id: str, output: Any, status: str = "succeeded") -> dict[str, Any]:
    error = {"type": "ValueError", "message": "bad"} if status == "failed" else None
    return {
        "callId": call_id,
        "type": "custom",
        "name": name,
        "status": status,
        "input": None,
        "output": output,
        "error": error,
    }


def three_step_agent(gateway: FakeGateway, effects: list[str]) -> Any:
    agent = agent_for(gateway)

    def effect(label: str, value: int) -> int:
        effects.append(label)
        return value

    @agent.run
    async def handle(run: Run) -> dict[str, Any]:
        a = await run.step("fetch", effect, "fetch", run.input["x"])
        b = await run.step("double", effect, "double", a * 2)
        c = await run.step("add", effect, "add", a + b)
        return {"a": a, "b": b, "c": c}

    return agent


async def test_a_run_succeeds_with_three_steps_and_its_result(gateway: FakeGateway) -> None:
    effects: list[str] = []
    run = gateway.submit({"x": 5})
    async with serving(three_step_agent(gateway, effects)):
        await gateway.wait_done(run.name)
    assert run.result == {"output": {"a": 5, "b": 10, "c": 15}}
    assert effects == ["fetch", "double", "add"]
    assert [(s["callId"], s["name"], s["status"]) for s in run.steps] == [
        ("1", "fetch", "succeeded"),
        ("2", "double", "succeeded"),
        ("3", "add", "succeeded"),
    ]
    first = run.steps[0]
    assert first["input"] == {"args": ["fetch", 5], "kwargs": {}}
    assert first["output"] == 5 and first["attempt"] == 1 and first["parentCallId"] is None
    assert first["startedAt"].endswith("Z") and first["endedAt"] >= first["startedAt"]


async def test_the_connections_are_kept_alive(gateway: FakeGateway) -> None:
    run = gateway.submit({"x": 1})
    async with serving(three_step_agent(gateway, [])):
        await gateway.wait_done(run.name)
    assert len(gateway.connections) <= 2


async def test_a_redelivery_executes_only_the_steps_not_in_the_journal(
    gateway: FakeGateway,
) -> None:
    effects: list[str] = []
    journal = [recorded("fetch", "1", 7), recorded("double", "2", 14)]
    run = gateway.submit({"x": 5}, attempt=2, journal=journal)
    async with serving(three_step_agent(gateway, effects)):
        await gateway.wait_done(run.name)
    assert effects == ["add"]
    assert run.result == {"output": {"a": 7, "b": 14, "c": 21}}
    assert [(s["callId"], s["attempt"]) for s in run.steps] == [("3", 2)]


async def test_a_step_recorded_as_failed_raises_step_failed_without_running(
    gateway: FakeGateway,
) -> None:
    calls: list[int] = []
    agent = agent_for(gateway)

    @agent.run
    async def handle(run: Run) -> Any:
        try:
            await run.step("charge", calls.append, 1)
        except StepFailed as exc:
            return {"failed": exc.error_type, "message": exc.message, "callId": exc.call_id}
        return "charged"

    run = gateway.submit(None, attempt=2, journal=[recorded("charge", "1", None, "failed")])
    async with serving(agent):
        await gateway.wait_done(run.name)
    assert calls == []
    assert run.result == {"output": {"failed": "ValueError", "message": "bad", "callId": "1"}}


async def test_a_step_that_raises_is_recorded_failed_and_raises_step_failed(
    gateway: FakeGateway,
) -> None:
    agent = agent_for(gateway)

    def divide(a: int, b: int) -> float:
        return a / b

    @agent.run
    async def handle(run: Run) -> Any:
        with pytest.raises(StepFailed) as caught:
            await run.step("divide", divide, 1, 0)
        assert isinstance(caught.value.__cause__, ZeroDivisionError)
        return caught.value.error_type

    run = gateway.submit(None)
    async with serving(agent):
        await gateway.wait_done(run.name)
    assert run.result == {"output": "ZeroDivisionError"}
    [step] = run.steps
    assert step["status"] == "failed" and step["output"] is None
    assert step["error"] == {"type": "ZeroDivisionError", "message": "division by zero"}


async def test_a_divergent_step_name_fails_the_run_with_non_determinism_error(
    gateway: FakeGateway,
) -> None:
    agent = agent_for(gateway)
    seen: list[BaseException] = []

    @agent.run
    async def handle(run: Run) -> Any:
        try:
            return await run.step("renamed", lambda: 1)
        except NonDeterminismError as exc:
            seen.append(exc)
            raise

    run = gateway.submit(None, attempt=2, journal=[recorded("original", "1", 1)])
    async with serving(agent):
        await gateway.wait_done(run.name)
    assert seen and "'original'" in str(seen[0]) and "'renamed'" in str(seen[0])
    assert run.result is not None and run.result["error"]["type"] == "NonDeterminismError"
    assert run.steps == []


async def test_a_handler_exception_is_reported_as_the_run_error(gateway: FakeGateway) -> None:
    agent = agent_for(gateway)

    @agent.run
    async def handle(run: Run) -> Any:
        raise RuntimeError("no plan for this input")

    run = gateway.submit("?")
    async with serving(agent):
        await gateway.wait_done(run.name)
    assert run.result == {"error": {"type": "RuntimeError", "message": "no plan for this input"}}


async def test_nested_steps_get_their_parent_call_id_and_keys_take_no_ordinal(
    gateway: FakeGateway,
) -> None:
    agent = agent_for(gateway)

    @agent.run
    async def handle(run: Run) -> Any:
        async def plan() -> list[int]:
            one = await run.step("think", lambda: 1)
            two = await run.step("look", lambda: 2, key="lookup")
            return [one, two]

        parts = await run.step("plan", plan)
        keyed = await run.step("keyed", lambda: 3, key="k")
        last = await run.step("last", lambda: 4)
        return [*parts, keyed, last]

    run = gateway.submit(None)
    async with serving(agent):
        await gateway.wait_done(run.name)
    assert run.result == {"output": [1, 2, 3, 4]}
    assert [(s["callId"], s["parentCallId"]) for s in run.steps] == [
        ("1.1", "1"),
        ("1.lookup", "1"),
        ("1", None),
        ("k", None),
        ("2", None),
    ]


async def test_a_result_that_is_not_json_is_reported_as_an_error(gateway: FakeGateway) -> None:
    agent = agent_for(gateway)

    @agent.run
    async def handle(run: Run) -> Any:
        return object()

    run = gateway.submit(None)
    async with serving(agent):
        await gateway.wait_done(run.name)
    assert run.result is not None and run.result["error"]["type"] == "TypeError"
