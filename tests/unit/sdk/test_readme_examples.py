"""Every example program of sdk/python/README.md serves a run against the FakeGateway and
answers the output written in its header (`# input: ...`, `# output: ...`)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from agentos_sdk import Agent

from tests.unit.sdk.fake_gateway import FakeGateway

README = Path(__file__).resolve().parents[3] / "sdk" / "python" / "README.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)
EXAMPLES = [block for block in _BLOCK.findall(README.read_text()) if "agent = Agent(" in block]


def header(block: str, field: str) -> Any:
    match = re.search(rf"^# {field}: (.*)$", block, re.M)
    assert match, f"the example has no `# {field}:` line"
    return json.loads(match.group(1))


def test_the_readme_has_an_example_per_feature() -> None:
    assert len(EXAMPLES) >= 7


@pytest.mark.parametrize("block", EXAMPLES, ids=[b.splitlines()[1][2:40] for b in EXAMPLES])
async def test_a_readme_example_answers_its_output(
    block: str, gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTOS_GATEWAY_URL", gateway.url)
    monkeypatch.setenv("AGENTOS_AGENT_TOKEN", gateway.token)
    monkeypatch.setenv("AGENTOS_HEARTBEAT_SECONDS", "0.1")
    monkeypatch.delenv("AGENTOS_MODEL_URL", raising=False)
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(block, str(README), "exec"), namespace)
    agent: Agent = namespace["agent"]
    run = gateway.submit(header(block, "input"))
    stop = asyncio.Event()
    serving = asyncio.create_task(agent.serve_async(stop))
    try:
        await gateway.wait_done(run.name)
    finally:
        stop.set()
        await asyncio.wait_for(serving, 10)
    assert run.result == {"output": header(block, "output")}
