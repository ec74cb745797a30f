"""A run sent to a suspended gVisor agent resumes it and succeeds (adr/0019-suspend-resume.md).

`agentos serve` (API, controller, relay, gateway) runs as a subprocess on the real
PostgreSQL, NATS and containerd; its gateway listens on the sandbox bridge's host address.
The agent is the tool agent of examples/agents/ (the SDK, long-polling the gateway) in the
python image under gVisor (runsc as the runc shim's BinaryName).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.runtimes.containerd.runtime import ContainerdRuntime
from tests.conftest import SERVICES_ENV, service_setting
from tests.e2e.runs_plane import Plane

pytestmark = [pytest.mark.containerd, pytest.mark.postgres, pytest.mark.nats]

BRIDGE = "10.89.0.1"
CONTAINERD_KEYS = (
    "CONTAINERD_ADDRESS",
    "CONTAINERD_SNAPSHOTTER",
    "AGENTOS_RUNC_RUNTIME",
    "AGENTOS_RUNSC_BINARY",
    "AGENTOS_SANDBOX_NETWORK",
    "AGENTOS_SANDBOX_BRIDGE",
    "AGENTOS_SANDBOX_SUBNET",
    "AGENTOS_CNI_PATH",
    "AGENTOS_CNI_IPAM_DIR",
)
TASK = {"task": "compute (2+3)*4 and save it to out/result.txt"}


@pytest.fixture
def plane(tmp_path: Path, plane_database: str) -> Iterator[Plane]:
    control = Plane(tmp_path, plane_database, service_setting("AGENTOS_NATS_URL", "NATS"))
    gateway_port = control.env["AGENTOS_GATEWAY_PORT"]
    control.env |= {k: SERVICES_ENV.get(k) or os.environ.get(k, "") for k in CONTAINERD_KEYS}
    control.env |= {
        "CONTAINERD_NAMESPACE": f"agentos-susp-{uuid.uuid4().hex[:8]}",
        "AGENTOS_SANDBOX_DIR": str(tmp_path / "sandboxes"),
        "AGENTOS_RUNTIME": "containerd",
        "AGENTOS_RUNSC_RUNTIME": "",
        "AGENTOS_GATEWAY_HOST": f"127.0.0.1,{BRIDGE}",
        "AGENTOS_GATEWAY_URL": f"http://{BRIDGE}:{gateway_port}",
    }
    control.start()
    try:
        yield control
    finally:
        control.stop()
        asyncio.run(_remove_all(control.env))
        subprocess.run(
            ["ctr", "--address", control.env["CONTAINERD_ADDRESS"], "namespaces", "rm",
             control.env["CONTAINERD_NAMESPACE"]],
            capture_output=True, check=False,
        )  # fmt: skip


async def _remove_all(env: dict[str, str]) -> None:
    runtime = ContainerdRuntime.from_env(env)
    try:
        for sandbox in await runtime.list_sandboxes():
            await runtime.remove(sandbox)
        await runtime.sweep(set())
    finally:
        await runtime.close()


def test_a_run_sent_to_a_suspended_gvisor_agent_resumes_it_and_succeeds(plane: Plane) -> None:
    tenant = f"r-{uuid.uuid4().hex[:6]}"
    manifest = {
        "apiVersion": "agentos.io/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": "tools"},
        "spec": {
            "image": f"oci-archive:{service_setting('AGENTOS_PYTHON_IMAGE_ARCHIVE', 'image')}",
            "command": ["python3", "/agent/tool_agent.py"],
            "runtime": {"class": "gvisor"},
            "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
            "readiness": {"heartbeat": {}, "periodSeconds": 1},
        },
    }
    answer = plane.http.post(f"/api/v1/tenants/{tenant}/agents", json=manifest)
    assert answer.status_code == 201, answer.text
    plane.wait_agent(tenant, "tools", "Ready", timeout_s=120)
    first = plane.wait_run(tenant, plane.submit(tenant, "tools", TASK), timeout_s=90)
    assert first["status"]["phase"] == "Succeeded", first["status"]

    assert plane.http.post(f"/api/v1/tenants/{tenant}/agents/tools/suspend").status_code == 202
    plane.wait_agent(tenant, "tools", "Suspended", timeout_s=120)
    suspended = plane.agent(tenant, "tools")["status"]
    assert suspended["suspension"]["memoryKept"] is True, suspended

    second = plane.wait_run(tenant, plane.submit(tenant, "tools", TASK), timeout_s=120)
    assert second["status"]["phase"] == "Succeeded", second["status"]
    assert second["status"]["output"]["result"] == 20
    # The restored SDK polls the gateway at once, so the run can end before the controller
    # has seen the probe answer and written Ready; the agent must get there all the same.
    plane.wait_agent(tenant, "tools", "Ready", timeout_s=60)
    agent = plane.agent(tenant, "tools")
    history = [h["to"] for h in agent["status"]["history"]]
    assert history[-3:] == ["Suspended", "Starting", "Ready"]
