"""The SDK reaches the gateway directly whatever proxy variables the sandbox has (each
sandbox gets HTTP_PROXY/HTTPS_PROXY for the egress proxy, architecture/networking.md)."""

from __future__ import annotations

import pytest
from agentos_sdk import Run

from tests.unit.sdk.conftest import agent_for, serving
from tests.unit.sdk.fake_gateway import FakeGateway

# A proxy that is not there: a request sent to it would fail.
DEAD_PROXY = "http://agent:secret@127.0.0.1:9"


async def test_the_sdk_never_sends_gateway_traffic_to_the_proxy(
    gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, DEAD_PROXY)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    agent = agent_for(gateway)

    @agent.run
    async def handle(run: Run) -> str:
        return "direct"

    run = gateway.submit({})
    async with serving(agent):
        await gateway.wait_done(run.name)
    assert run.result == {"output": "direct"}
