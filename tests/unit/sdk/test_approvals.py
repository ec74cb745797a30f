"""Approvals in the SDK (architecture/approvals.md): a gated tool call asks first, runs with
the approved arguments, and reports its approval; a refusal reaches the handler."""

from __future__ import annotations

import asyncio
from typing import Any

from agentos_sdk import ApprovalRejected, Run

from tests.unit.sdk.conftest import agent_for, serving
from tests.unit.sdk.fake_gateway import FakeGateway


def _deleting_agent(gateway: FakeGateway, deleted: list[str]) -> Any:
    agent = agent_for(gateway)

    @agent.tool(destructive=True)
    def delete_file(path: str) -> str:
        deleted.append(path)
        return f"deleted {path}"

    @agent.tool
    def look(path: str) -> str:
        return f"{path} exists"

    @agent.run
    async def handle(run: Run) -> Any:
        await run.call_tool(look, path=run.input)
        try:
            return await run.call_tool(delete_file, path=run.input)
        except ApprovalRejected as no:
            return {"refused": no.state, "by": no.decided_by}

    return agent


async def _asked(gateway: FakeGateway, name: str, call_id: str) -> None:
    for _ in range(200):
        if call_id in gateway.runs[name].approvals:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"run {name} never asked about step {call_id}")


async def test_a_destructive_tool_waits_and_runs_with_the_edited_arguments(
    gateway: FakeGateway,
) -> None:
    deleted: list[str] = []
    run = gateway.submit("/a", approval="destructive")
    async with serving(_deleting_agent(gateway, deleted)):
        await _asked(gateway, run.name, "2")
        assert deleted == [], "not before the decision"
        gateway.decide(run.name, "2", "approved", {"path": "/b"})
        await gateway.wait_done(run.name)
    assert deleted == ["/b"]
    assert run.result == {"output": "deleted /b"}
    step = run.steps[-1]
    assert (step["name"], step["input"]) == ("delete_file", {"path": "/b"})
    assert (step["approvalId"], step["destructive"]) == ("ap-2", True)
    assert "1" not in run.approvals, "a tool not declared destructive does not ask"


async def test_a_rejection_reaches_the_handler_and_the_tool_does_not_run(
    gateway: FakeGateway,
) -> None:
    deleted: list[str] = []
    run = gateway.submit("/a", approval="destructive")
    async with serving(_deleting_agent(gateway, deleted)):
        await _asked(gateway, run.name, "2")
        gateway.decide(run.name, "2", "expired")
        await gateway.wait_done(run.name)
    assert deleted == []
    assert run.result == {"output": {"refused": "expired", "by": "ann"}}
    assert [s["name"] for s in run.steps] == ["look"]


async def test_without_a_policy_nothing_asks(gateway: FakeGateway) -> None:
    deleted: list[str] = []
    run = gateway.submit("/a")
    async with serving(_deleting_agent(gateway, deleted)):
        await gateway.wait_done(run.name)
    assert deleted == ["/a"] and run.approvals == {}


async def test_request_approval_returns_the_decision_and_a_later_attempt_gets_the_same(
    gateway: FakeGateway,
) -> None:
    agent = agent_for(gateway)
    seen: list[tuple[int, bool, Any]] = []

    @agent.run
    async def handle(run: Run) -> Any:
        decision = await run.request_approval("publish", {"url": "x"}, timeout_seconds=60)
        seen.append((run.attempt, decision.approved, decision.arguments))
        if run.attempt == 1:
            raise RuntimeError("crash after the decision")
        return decision.state

    run = gateway.submit(None)
    async with serving(agent):
        await _asked(gateway, run.name, "1")
        gateway.decide(run.name, "1", "approved", {"url": "y"})
        for _ in range(200):
            if run.result is not None:
                break
            await asyncio.sleep(0.02)
        gateway.runs[run.name].result, run.finished = None, False
        run.done.clear()
        gateway.redeliver(run.name)
        await gateway.wait_done(run.name)
    assert seen == [(1, True, {"url": "y"}), (2, True, {"url": "y"})]
    assert len(run.approvals) == 1
