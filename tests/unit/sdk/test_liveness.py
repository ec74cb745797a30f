"""The heartbeat file (`AGENTOS_HEARTBEAT_FILE`): touched while the agent serves, not after."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from agentos_sdk import Agent, Run

from tests.unit.sdk.conftest import agent_for, serving
from tests.unit.sdk.fake_gateway import FakeGateway


def idle_agent(gateway: FakeGateway, **settings: object) -> Agent:
    agent = agent_for(gateway, **settings)

    @agent.run
    async def handle(run: Run) -> str:
        return "ok"

    return agent


async def test_the_heartbeat_file_is_touched_while_serving_and_not_after(
    gateway: FakeGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    beat = tmp_path / "heartbeat"
    monkeypatch.setenv("AGENTOS_HEARTBEAT_FILE", str(beat))
    agent = idle_agent(gateway, heartbeat_file_seconds=0.05)
    assert agent.heartbeat_file == beat
    async with serving(agent):
        async with asyncio.timeout(5):
            while not beat.exists():
                await asyncio.sleep(0.01)
        os.utime(beat, (0, 0))  # stale: the next touch must make it fresh again
        async with asyncio.timeout(5):
            while beat.stat().st_mtime == 0:
                await asyncio.sleep(0.01)
    os.utime(beat, (0, 0))
    await asyncio.sleep(0.2)
    assert beat.stat().st_mtime == 0, "touched after serve_async returned"


async def test_no_heartbeat_file_when_unset_or_empty(
    gateway: FakeGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AGENTOS_HEARTBEAT_FILE", raising=False)
    assert idle_agent(gateway).heartbeat_file is None
    monkeypatch.setenv("AGENTOS_HEARTBEAT_FILE", str(tmp_path / "heartbeat"))
    assert idle_agent(gateway, heartbeat_file="").heartbeat_file is None


async def test_an_unwritable_heartbeat_file_does_not_stop_serving(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    agent = idle_agent(gateway, heartbeat_file=tmp_path / "missing" / "heartbeat")
    run = gateway.submit("ping")
    async with serving(agent):
        await gateway.wait_done(run.name)
    assert run.result == {"output": "ok"}
