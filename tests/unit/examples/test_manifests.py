"""The example agents' manifests as the `process` runtime runs them: valid Agents whose
command starts from the repository root, finds the SDK through the manifest's PYTHONPATH,
turns Ready through the heartbeat file, and serves a run from a FakeGateway."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.controllers.agents.sandbox import probe_spec
from controlplane.domain.agents.model import Agent
from controlplane.runtimes.base import SandboxSpec
from controlplane.runtimes.process import ProcessRuntime
from harness.waiting import eventually
from tests.unit.examples.conftest import EXAMPLES, ROOT
from tests.unit.sdk.fake_gateway import FakeGateway


def manifest(name: str) -> Agent:
    return Agent.model_validate(yaml.safe_load((EXAMPLES / name).read_text()))


@pytest.mark.parametrize(
    ("name", "concurrency"),
    [
        ("tool-agent.yaml", 2),
        ("checkpoint-agent.yaml", 1),
        ("tool-agent-runc.yaml", 2),
        ("tool-agent-gvisor.yaml", 2),
    ],
)
def test_the_manifests_declare_their_runs(name: str, concurrency: int) -> None:
    spec = manifest(name).spec
    assert (spec.runs.concurrency, spec.runs.maxAttempts) == (concurrency, 3)
    assert spec.readiness is not None and spec.readiness.heartbeat is not None
    env = {e.name: e.value for e in spec.env}
    if spec.runtime.class_ == "process":
        assert env["PYTHONPATH"] == "sdk/python"
        assert (ROOT / spec.command[1]).is_file()
    else:
        assert spec.image == "localhost/agentos/python-agent:0.1.0"
        assert spec.command[1].removeprefix("/agent/") in {p.name for p in EXAMPLES.glob("*.py")}


@pytest.fixture
async def process_runtime(
    gateway: FakeGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ProcessRuntime]:
    """A process runtime started from the repository root (where `make run` starts serve);
    its sandboxes are stopped before the gateway they poll."""
    monkeypatch.chdir(ROOT)
    runtime = ProcessRuntime(tmp_path / "sandboxes")
    yield runtime
    for sandbox_id in await runtime.list_sandboxes():
        await runtime.remove(sandbox_id)
    await runtime.close()


@pytest.mark.parametrize(
    ("name", "run_input", "output"),
    [
        ("tool-agent.yaml", {"task": "compute 6*7 and save it to x.txt"}, {"result": 42}),
        ("checkpoint-agent.yaml", {"stages": 3, "stage_seconds": 0}, {"lines": 3}),
    ],
)
async def test_a_process_sandbox_of_the_manifest_serves_a_run(
    process_runtime: ProcessRuntime,
    gateway: FakeGateway,
    tmp_path: Path,
    name: str,
    run_input: Any,
    output: dict[str, Any],
) -> None:
    agent = manifest(name)
    env = {e.name: e.value for e in agent.spec.env}
    env |= {
        "AGENTOS_GATEWAY_URL": gateway.url,
        "AGENTOS_AGENT_TOKEN": gateway.token,
        "AGENTOS_WORK_DIR": str(tmp_path / "work"),  # not the repository's .agentos/
    }
    probe = probe_spec(agent.spec)
    assert probe is not None
    spec = SandboxSpec(
        sandbox_id=f"example-{uuid.uuid4().hex[:8]}",
        agent_id="agent-1",
        tenant="acme",
        name=agent.metadata.name,
        image=agent.spec.image,
        runtime_class="process",
        command=list(agent.spec.command),
        env=env,
        probe=probe,
    )
    await process_runtime.create(spec)
    await process_runtime.start(spec.sandbox_id)
    await eventually(lambda: process_runtime.probe(spec.sandbox_id, probe), 30, "Ready")
    run = gateway.submit(run_input)
    try:
        await gateway.wait_done(run.name, timeout_s=30)
    except TimeoutError:
        pytest.fail(f"no result; the agent's log:\n{await process_runtime.logs(spec.sandbox_id)}")
    assert run.result is not None
    assert output.items() <= run.result["output"].items()
