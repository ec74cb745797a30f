"""Fixtures of the SDK's unit tests: a FakeGateway per test, and an agent serving from it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from agentos_sdk import Agent

from tests.unit.sdk.fake_gateway import FakeGateway


@pytest.fixture
async def gateway() -> AsyncIterator[FakeGateway]:
    fake = FakeGateway()
    await fake.start()
    yield fake
    await fake.stop()


def agent_for(gateway: FakeGateway, **settings: Any) -> Agent:
    """An Agent of the fake gateway with fast heartbeats and short polls."""
    defaults: dict[str, Any] = {
        "gateway_url": gateway.url,
        "token": gateway.token,
        "heartbeat_seconds": 0.05,
        "poll_seconds": 1,
        "drain_seconds": 2,
    }
    return Agent(**{**defaults, **settings})


@contextlib.asynccontextmanager
async def serving(agent: Agent) -> AsyncIterator[asyncio.Task[None]]:
    """`agent.serve_async` in a task for the block, then a graceful stop."""
    stop = asyncio.Event()
    task = asyncio.create_task(agent.serve_async(stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
