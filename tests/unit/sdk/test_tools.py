"""Tools and model calls: registration, schemas from signatures, tool and llm steps."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from agentos_sdk import Agent, Run, Tool

from tests.unit.sdk.conftest import agent_for, serving
from tests.unit.sdk.fake_gateway import FakeGateway

ENV = {"AGENTOS_GATEWAY_URL": "http://gw:8090", "AGENTOS_AGENT_TOKEN": "t"}


def test_a_tool_schema_is_read_from_its_signature() -> None:
    agent = Agent(environ=ENV)

    @agent.tool(destructive=True)
    def write_file(path: str, lines: list[str], mode: Literal["w", "a"] = "w") -> int:
        """Write lines into a file of the sandbox.

        Returns the number of bytes written."""
        return 0

    [tool] = agent.tools
    assert (tool.name, tool.destructive) == ("write_file", True)
    assert tool.description == "Write lines into a file of the sandbox."
    assert tool.input_schema == {
        "type": "object",
        "properties": {
            "path": {"type": "string"},
            "lines": {"type": "array", "items": {"type": "string"}},
            "mode": {"enum": ["w", "a"]},
        },
        "required": ["path", "lines"],
    }
    assert tool.as_mcp()["annotations"] == {"destructiveHint": True}


def test_a_bare_decorator_registers_and_returns_the_function() -> None:
    agent = Agent(environ=ENV)

    @agent.tool
    async def lookup(term: str, limit: int | None = None) -> list[str]:
        return [term]

    assert agent.tools[0].fn is lookup
    props = agent.tools[0].input_schema["properties"]
    assert props == {
        "term": {"type": "string"},
        "limit": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
    }


def test_tool_names_are_unique_and_well_formed() -> None:
    agent = Agent(environ=ENV)
    agent.tool(name="calc")(lambda: 1)
    with pytest.raises(ValueError, match="already registered"):
        agent.tool(name="calc")(lambda: 2)
    with pytest.raises(ValueError, match="must match"):
        Tool.of(lambda: 1, name="no spaces allowed")


async def test_call_tool_records_a_tool_step_with_its_arguments(gateway: FakeGateway) -> None:
    agent = agent_for(gateway)
    written: list[str] = []

    @agent.tool(name="calculator")
    def add(a: float, b: float) -> float:
        return a + b

    @agent.tool
    async def note(text: str) -> str:
        written.append(text)
        return "ok"

    @agent.run
    async def handle(run: Run) -> Any:
        total = await run.call_tool(add, a=2, b=3)
        await run.call_tool("note", text=f"total={total}")
        with pytest.raises(LookupError, match="calculator, note"):
            await run.call_tool("missing")
        return total

    run = gateway.submit(None)
    async with serving(agent):
        await gateway.wait_done(run.name)
    assert run.result == {"output": 5}
    assert written == ["total=5"]
    assert [(s["type"], s["name"], s["input"]) for s in run.steps] == [
        ("tool", "calculator", {"a": 2, "b": 3}),
        ("tool", "note", {"text": "total=5"}),
    ]


async def test_chat_records_an_llm_step_with_the_usage_it_returned(gateway: FakeGateway) -> None:
    agent = agent_for(gateway)

    async def complete(**request: Any) -> dict[str, Any]:
        return {
            "choices": [{"message": {"role": "assistant", "content": "4"}}],
            "usage": {
                "prompt_tokens": 12,
                "completion_tokens": 3,
                "prompt_tokens_details": {"cached_tokens": 8},
                "completion_tokens_details": {"reasoning_tokens": 1},
            },
        }

    @agent.run
    async def handle(run: Run) -> Any:
        reply = await run.chat(
            complete, model="small", messages=[{"role": "user", "content": "2+2?"}]
        )
        return reply["choices"][0]["message"]["content"]

    run = gateway.submit(None)
    async with serving(agent):
        await gateway.wait_done(run.name)
    assert run.result == {"output": "4"}
    [step] = run.steps
    assert (step["type"], step["name"]) == ("llm", "small")
    assert step["input"] == {"model": "small", "messages": [{"role": "user", "content": "2+2?"}]}
    assert step["usage"] == {
        "inputTokens": 12,
        "outputTokens": 3,
        "cachedInputTokens": 8,
        "reasoningTokens": 1,
    }
