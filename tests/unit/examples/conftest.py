"""Fixtures of the example agents' tests: a FakeGateway, the example modules, a work dir."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.unit.sdk.fake_gateway import FakeGateway

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples" / "agents"


def load_example(stem: str) -> ModuleType:
    """A fresh import of examples/agents/<stem>.py (each call a new module object)."""
    spec = importlib.util.spec_from_file_location(f"example_{stem}", EXAMPLES / f"{stem}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def gateway() -> AsyncIterator[FakeGateway]:
    fake = FakeGateway()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def work_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`AGENTOS_WORK_DIR` for the test; no model endpoint unless the test sets one."""
    folder = tmp_path / "work"
    monkeypatch.setenv("AGENTOS_WORK_DIR", str(folder))
    monkeypatch.delenv("AGENTOS_MODEL_URL", raising=False)
    monkeypatch.delenv("AGENTOS_HEARTBEAT_FILE", raising=False)
    return folder


def settings_for(gateway: FakeGateway) -> dict[str, object]:
    """Agent settings for the fake gateway: fast heartbeats, short polls, no liveness file."""
    return {
        "gateway_url": gateway.url,
        "token": gateway.token,
        "heartbeat_seconds": 0.05,
        "poll_seconds": 1,
        "drain_seconds": 2,
        "heartbeat_file": "",
    }
