"""The python agent image (hack/build-agent-image.py --python) in the real containerd.

Built here from the current sources (the SDK, examples/agents), twice, to the same bytes;
imported with `ctr images import` as `make services` does; then run by the ContainerdRuntime:
under runc and gVisor its python3 imports the SDK as the non-root agent user, and the tool
agent of examples/agents/tool-agent-runc.yaml, under runc and under gVisor, serves a run from
a FakeGateway on the host's sandbox-bridge address (the one host port the firewall lets a
sandbox reach): it plans, calculates and writes its file in the sandbox.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.controllers.agents.sandbox import probe_spec
from controlplane.domain.agents.model import Agent
from controlplane.runtimes.base import SandboxSpec, SandboxState
from controlplane.runtimes.containerd.runtime import ContainerdRuntime
from harness.ports import free_port
from harness.waiting import eventually
from tests.conftest import service_setting
from tests.unit.sdk.fake_gateway import FakeGateway

pytestmark = pytest.mark.containerd

ROOT = Path(__file__).resolve().parents[2]
BUILDER = ROOT / "hack" / "build-agent-image.py"
REF = "localhost/agentos/python-agent:0.1.0"
MANIFEST = ROOT / "examples" / "agents" / "tool-agent-runc.yaml"
DEADLINE_S = 60.0
PROBE = (
    "import agentos_sdk, json, os, sys, pathlib; "
    "work = pathlib.Path(os.environ['AGENTOS_WORK_DIR']); (work / 'probe').write_text('ok'); "
    "print('PROBE ' + json.dumps({'sdk': agentos_sdk.__version__, 'python': sys.version[:4], "
    "'uid': os.getuid(), 'work': str(work), 'agents': sorted(os.listdir('/agent'))}))"
)


@pytest.fixture(scope="module")
def settings() -> dict[str, str]:
    keys = ["CONTAINERD_ADDRESS", "CONTAINERD_NAMESPACE", "CONTAINERD_SNAPSHOTTER"]
    found = {key: service_setting(key, "containerd") for key in keys}
    for key in ("AGENTOS_RUNC_RUNTIME", "AGENTOS_RUNSC_RUNTIME", "AGENTOS_RUNSC_BINARY"):
        found[key] = service_setting(key, "containerd")
    found["AGENTOS_CNI_IPAM_DIR"] = service_setting("AGENTOS_CNI_IPAM_DIR", "sandbox network")
    return found


def ctr(settings: dict[str, str], *args: str) -> str:
    """`ctr` stdout against the test containerd and namespace; fails on error."""
    address, namespace = settings["CONTAINERD_ADDRESS"], settings["CONTAINERD_NAMESPACE"]
    result = subprocess.run(
        ["ctr", "--address", address, "--namespace", namespace, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"ctr {' '.join(args)}: {result.stderr}"
    return result.stdout


def build(out: Path) -> str:
    """Build the image archive to `out` (the .debs cached under .services/cache/debs)."""
    cache = ROOT / ".services" / "cache" / "debs"
    command = [sys.executable, str(BUILDER), str(out), "--python", "--cache-dir", str(cache)]
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    index = subprocess.run(["tar", "-xOf", str(out), "index.json"], check=True, capture_output=True)
    return str(json.loads(index.stdout)["manifests"][0]["digest"])


@pytest.fixture(scope="module")
def imported(settings: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """The image built from the current sources and imported; its manifest digest."""
    folder = tmp_path_factory.mktemp("python-agent-image")
    first, second = folder / "first.tar", folder / "second.tar"
    digest = build(first)
    assert build(second) == digest
    assert first.read_bytes() == second.read_bytes(), "the build is not deterministic"
    snapshotter = settings["CONTAINERD_SNAPSHOTTER"]
    ctr(settings, "images", "import", "--snapshotter", snapshotter, str(first))
    rows = [line.split() for line in ctr(settings, "images", "ls").splitlines()[1:]]
    assert {row[0]: row[2] for row in rows}.get(REF) == digest
    return digest


@pytest.fixture
async def runtime(
    settings: dict[str, str], gateway_port: int, tmp_path: Path
) -> AsyncIterator[ContainerdRuntime]:
    rt = ContainerdRuntime.from_env(
        {
            **settings,
            "AGENTOS_SANDBOX_DIR": str(tmp_path / "sb"),
            "AGENTOS_GATEWAY_PORT": str(gateway_port),
        }
    )
    yield rt
    await rt.close()


NewSpec = Callable[..., SandboxSpec]


@pytest.fixture
async def new_spec(runtime: ContainerdRuntime, imported: str) -> AsyncIterator[NewSpec]:
    """SandboxSpec factory for the python image; every sandbox is removed after the test."""
    created: list[str] = []

    def make(runtime_class: str, **fields: Any) -> SandboxSpec:
        sandbox_id = f"it-py-{runtime_class}-{uuid.uuid4().hex[:10]}"
        created.append(sandbox_id)
        return SandboxSpec(
            sandbox_id=sandbox_id,
            agent_id=f"agent-{sandbox_id}",
            tenant="acme",
            name="python-agent",
            image=REF,
            runtime_class=runtime_class,
            **fields,
        )

    yield make
    for sandbox_id in created:
        await runtime.remove(sandbox_id)


@pytest.mark.parametrize("runtime_class", ["runc", "gvisor"])
async def test_python3_in_the_image_imports_the_sdk_as_the_agent_user(
    runtime: ContainerdRuntime, new_spec: NewSpec, runtime_class: str
) -> None:
    spec = new_spec(runtime_class, command=["python3", "-c", PROBE], memory_bytes=128 << 20)
    await runtime.create(spec)
    await runtime.start(spec.sandbox_id)

    async def exited() -> bool:
        return (await runtime.status(spec.sandbox_id)).state is SandboxState.EXITED

    await eventually(exited, DEADLINE_S, "the python3 probe to exit")
    logs = await runtime.logs(spec.sandbox_id)
    status = await runtime.status(spec.sandbox_id)
    assert status.exit_code == 0, logs
    (line,) = [line for line in logs.splitlines() if line.startswith("PROBE ")]
    assert json.loads(line.removeprefix("PROBE ")) == {
        "sdk": "0.1.0",
        "python": "3.11",
        "uid": 65532,
        "work": "/home/agent/work",
        "agents": sorted(p.name for p in (ROOT / "examples" / "agents").glob("*.py")),
    }


@pytest.fixture(scope="module")
def gateway_port() -> int:
    return free_port()


@pytest.mark.parametrize("runtime_class", ["runc", "gvisor"])
async def test_the_tool_agent_serves_a_run_from_the_gateway_on_the_host(
    runtime: ContainerdRuntime, new_spec: NewSpec, gateway_port: int, runtime_class: str
) -> None:
    manifest = Agent.model_validate(yaml.safe_load(MANIFEST.read_text()))
    gateway = FakeGateway()
    assert runtime.network is not None, "sandboxes reach the gateway over the bridge"
    await gateway.start(runtime.network.settings.host_address, gateway_port)
    env = {e.name: e.value for e in manifest.spec.env}
    env |= {"AGENTOS_GATEWAY_URL": gateway.url, "AGENTOS_AGENT_TOKEN": gateway.token}
    probe = probe_spec(manifest.spec)
    assert probe is not None and probe.heartbeat
    spec = new_spec(
        runtime_class,
        command=list(manifest.spec.command),
        env=env,
        memory_bytes=128 << 20,
        probe=probe,
    )
    try:
        await runtime.create(spec)
        await runtime.start(spec.sandbox_id)
        # Ready: the SDK touches the heartbeat file while it serves.
        await eventually(lambda: runtime.probe(spec.sandbox_id, probe), DEADLINE_S, "Ready")
        run = gateway.submit({"task": "compute (2+3)*4 and save it to out/result.txt"})
        try:
            await gateway.wait_done(run.name, timeout_s=DEADLINE_S)
        except TimeoutError:
            pytest.fail(f"no result; the agent's log:\n{await runtime.logs(spec.sandbox_id)}")
        assert run.result is not None
        assert run.result["output"]["result"] == 20
        assert run.result["output"]["file"] == {"path": "out/result.txt", "bytes": 13}
        assert [s["name"] for s in run.steps] == ["plan", "calculate", "write_file"]
        # The file is in the sandbox, written as the agent's user.
        check = (
            "import os, sys; path = '/home/agent/work/out/result.txt'; "
            "sys.exit(open(path).read() != '(2+3)*4 = 20\\n' or os.stat(path).st_uid != 65532)"
        )
        assert await runtime.exec(spec.sandbox_id, ["python3", "-c", check], 30) == 0
    finally:
        await runtime.stop(spec.sandbox_id)  # before the gateway it long-polls
        await gateway.stop()
