"""examples/agents/tool_agent.py against the FakeGateway: its tools, the rule planner, the
replay of a redelivered run, and the model path against a FakeModelProvider."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.unit.examples.conftest import load_example, settings_for
from tests.unit.examples.fake_model import FakeModelProvider, answer, tool_call
from tests.unit.sdk.conftest import serving
from tests.unit.sdk.fake_gateway import FakeGateway, FakeRun

TASK = {"task": "compute 2+3*4 and save it to result.txt"}


@pytest.fixture
def example() -> ModuleType:
    return load_example("tool_agent")


async def run_once(example: ModuleType, gateway: FakeGateway, run: FakeRun) -> FakeRun:
    async with serving(example.build_agent(**settings_for(gateway))):
        return await gateway.wait_done(run.name)


def recorded(step: dict[str, Any]) -> dict[str, Any]:
    """A reported step as the journal of a later attempt holds it."""
    keys = ("callId", "type", "name", "status", "input", "output", "error")
    return {key: step[key] for key in keys}


@pytest.mark.parametrize(
    ("expression", "value"),
    [("2+3*4", 14), ("(1+2)/4", 0.75), ("-2**3", -8), ("7//2", 3), ("7 % 4", 3), ("2^10", 1024)],
)
def test_the_calculator_does_arithmetic(example: ModuleType, expression: str, value: float) -> None:
    assert example.calculate(expression) == value


@pytest.mark.parametrize(
    "expression",
    ["__import__('os').system('id')", "x + 1", "abs(-1)", "(1).real", "2**10000", "True + 1", "1+"],
)
def test_the_calculator_refuses_what_is_not_arithmetic(
    example: ModuleType, expression: str
) -> None:
    with pytest.raises(ValueError):
        example.calculate(expression)


@pytest.mark.parametrize("path", ["../escape.txt", "/etc/passwd", "a/../../escape.txt", "."])
def test_write_file_refuses_paths_outside_its_work_dir(
    example: ModuleType, work_dir: Path, path: str
) -> None:
    with pytest.raises(PermissionError):
        example.write_file(path, "nope")
    assert not (work_dir.parent / "escape.txt").exists()


def test_write_file_is_the_destructive_tool(example: ModuleType, gateway: FakeGateway) -> None:
    tools = {tool.name: tool for tool in example.build_agent(**settings_for(gateway)).tools}
    assert set(tools) == {"calculate", "write_file"}
    assert tools["write_file"].destructive is True
    assert tools["calculate"].destructive is False
    assert tools["write_file"].input_schema["required"] == ["path", "content"]


async def test_the_planner_calculates_and_writes_the_file(
    example: ModuleType, gateway: FakeGateway, work_dir: Path
) -> None:
    run = await run_once(example, gateway, gateway.submit(TASK))
    assert run.result == {
        "output": {
            "answer": "2+3*4 = 14",
            "result": 14,
            "planner": "rules",
            "file": {"path": "result.txt", "bytes": 11},
        }
    }
    assert (work_dir / "result.txt").read_text() == "2+3*4 = 14\n"
    assert [(s["callId"], s["type"], s["name"]) for s in run.steps] == [
        ("1", "custom", "plan"),
        ("2", "tool", "calculate"),
        ("3", "tool", "write_file"),
    ]
    assert run.steps[1]["input"] == {"expression": "2+3*4"}
    assert run.steps[2]["input"] == {"path": "result.txt", "content": "2+3*4 = 14\n"}


async def test_the_planner_reads_an_expression_and_a_file(
    example: ModuleType, gateway: FakeGateway, work_dir: Path
) -> None:
    run = await run_once(example, gateway, gateway.submit({"expression": "6*7", "file": "a/b.txt"}))
    assert run.result is not None and run.result["output"]["result"] == 42
    assert (work_dir / "a" / "b.txt").read_text() == "6*7 = 42\n"


async def test_an_input_the_planner_cannot_read_fails_the_run(
    example: ModuleType, gateway: FakeGateway, work_dir: Path
) -> None:
    run = await run_once(example, gateway, gateway.submit({"task": "paint the fence"}))
    assert run.result is not None and run.result["error"]["type"] == "StepFailed"
    assert "cannot plan" in run.result["error"]["message"]
    assert [s["status"] for s in run.steps] == ["failed"]


async def test_a_redelivery_does_not_call_a_journaled_tool_again(
    example: ModuleType, gateway: FakeGateway, work_dir: Path
) -> None:
    first = await run_once(example, gateway, gateway.submit(TASK, name="first"))
    (work_dir / "result.txt").unlink()
    # Attempt 2 of a run whose plan and calculation were recorded (with another value than
    # the calculator gives, so the output can only come from the journal).
    journal = [recorded(s) for s in first.steps[:2]]
    journal[1]["output"] = 15
    again = gateway.submit(TASK, name="again", attempt=2, journal=journal)
    await run_once(example, gateway, again)
    assert (work_dir / "result.txt").read_text() == "2+3*4 = 15\n"
    assert [s["callId"] for s in again.steps] == ["3"]  # only write_file ran
    assert again.result is not None and again.result["output"]["result"] == 15


async def test_a_redelivery_after_the_file_was_written_does_not_write_it_again(
    example: ModuleType, gateway: FakeGateway, work_dir: Path
) -> None:
    first = await run_once(example, gateway, gateway.submit(TASK, name="first"))
    (work_dir / "result.txt").unlink()
    journal = [recorded(s) for s in first.steps]
    again = await run_once(
        example, gateway, gateway.submit(TASK, name="again", attempt=2, journal=journal)
    )
    assert not (work_dir / "result.txt").exists()
    assert again.steps == []
    assert again.result == first.result


@pytest.fixture
async def provider() -> AsyncIterator[FakeModelProvider]:
    fake = FakeModelProvider(
        [
            tool_call("call-1", "calculate", expression="6*7"),
            tool_call("call-2", "write_file", path="answer.txt", content="42\n"),
            answer("6*7 is 42; I saved it to answer.txt."),
        ]
    )
    await fake.start()
    yield fake
    await fake.stop()


async def test_the_model_path_loops_on_tool_calls_and_records_usage(
    example: ModuleType,
    gateway: FakeGateway,
    work_dir: Path,
    provider: FakeModelProvider,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTOS_MODEL_URL", provider.url)
    monkeypatch.setenv("AGENTOS_MODEL", "fake-small")
    monkeypatch.setenv("AGENTOS_MODEL_API_KEY", "sk-test")
    run = await run_once(example, gateway, gateway.submit({"task": "what is 6*7? save it"}))
    assert run.result == {
        "output": {"answer": "6*7 is 42; I saved it to answer.txt.", "planner": "model", "turns": 3}
    }
    assert (work_dir / "answer.txt").read_text() == "42\n"
    assert [(s["callId"], s["type"], s["name"]) for s in run.steps] == [
        ("1", "llm", "fake-small"),
        ("2", "tool", "calculate"),
        ("3", "llm", "fake-small"),
        ("4", "tool", "write_file"),
        ("5", "llm", "fake-small"),
    ]
    llm_steps = [s for s in run.steps if s["type"] == "llm"]
    for turn, step in enumerate(llm_steps):
        usage = provider.usage_of(turn)
        assert step["usage"] == {
            "inputTokens": usage["prompt_tokens"],
            "outputTokens": usage["completion_tokens"],
            "cachedInputTokens": 0,
            "reasoningTokens": 0,
        }
    assert all(s["usage"] is None for s in run.steps if s["type"] == "tool")
    assert provider.authorizations == ["Bearer sk-test"] * 3
    first, second, _ = provider.requests
    functions = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert set(functions) == {"calculate", "write_file"}
    assert functions["calculate"]["parameters"]["required"] == ["expression"]
    assert first["messages"][-1] == {"role": "user", "content": "what is 6*7? save it"}
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call-1", "content": "42"}


async def test_a_redelivered_model_run_does_not_ask_the_model_again(
    example: ModuleType,
    gateway: FakeGateway,
    work_dir: Path,
    provider: FakeModelProvider,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTOS_MODEL_URL", provider.url)
    first = await run_once(example, gateway, gateway.submit("what is 6*7?", name="first"))
    provider.script.append(answer("only asked once more"))
    journal = [recorded(s) for s in first.steps[:4]]  # both tool calls done, no final answer
    again = await run_once(
        example, gateway, gateway.submit("what is 6*7?", name="again", attempt=2, journal=journal)
    )
    assert len(provider.requests) == 4  # 3 for the first run, 1 for the redelivery
    assert [s["callId"] for s in again.steps] == ["5"]
    assert again.result is not None
    assert again.result["output"]["answer"] == "only asked once more"
