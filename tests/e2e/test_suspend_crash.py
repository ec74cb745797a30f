"""kill -9 of the controller during a suspend and during a resume (adr/0019-suspend-resume.md):
the agent ends Suspended or Ready, never lost; its memory survives both crashes; no
checkpoint image is left that no suspended agent owns.

`agentos serve` runs as a subprocess on the real PostgreSQL, NATS and containerd (gVisor as
the runc shim's BinaryName, the counter agent of tests/agents/memory_counter.sh), in a
containerd namespace of its own.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from controlplane.runtimes.containerd.runtime import ContainerdRuntime
from harness.waiting import wait_until
from tests.conftest import SERVICES_ENV, service_setting
from tests.e2e.runs_plane import Plane

pytestmark = [pytest.mark.containerd, pytest.mark.postgres, pytest.mark.nats]

COUNTER = Path(__file__).resolve().parents[1] / "agents" / "memory_counter.sh"
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


def _manifest(name: str, archive: str) -> dict[str, object]:
    return {
        "apiVersion": "agentos.io/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": {
            "image": f"oci-archive:{archive}",
            "runtime": {"class": "gvisor"},
            "command": ["sh", "-c", COUNTER.read_text()],
            "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}},
            "readiness": {"heartbeat": {}, "periodSeconds": 0.5},
        },
    }


def images(sandboxes: Path) -> set[str]:
    """The sandboxes that hold a checkpoint image."""
    if not sandboxes.is_dir():
        return set()
    return {p.name for p in sandboxes.iterdir() if (p / "checkpoint").is_dir()}


def count(sandboxes: Path, sid: str) -> int:
    try:
        return int((sandboxes / sid / "agentos" / "count").read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


async def _clean(env: dict[str, str]) -> None:
    runtime = ContainerdRuntime.from_env(env)
    try:
        for sandbox in await runtime.list_sandboxes():
            await runtime.remove(sandbox)
        await runtime.sweep(set())
    finally:
        await runtime.close()


def test_kill_9_during_suspend_and_during_resume_loses_neither_agent_nor_memory(
    tmp_path: Path, pg_url: str, nats_url: str
) -> None:
    archive = service_setting("AGENTOS_EXAMPLE_IMAGE_ARCHIVE", "the example agent image")
    namespace = f"agentos-suspend-{uuid.uuid4().hex[:8]}"
    sandboxes = tmp_path / "sandboxes"
    env = {k: SERVICES_ENV.get(k) or os.environ.get(k, "") for k in CONTAINERD_KEYS}
    env |= {
        "CONTAINERD_NAMESPACE": namespace,
        "AGENTOS_SANDBOX_DIR": str(sandboxes),
        "AGENTOS_RUNSC_RUNTIME": "",
    }
    plane = Plane(tmp_path, pg_url, nats_url)
    plane.env |= env | {
        "AGENTOS_RUNTIME": "containerd",
        "AGENTOS_COMPONENTS": "api,controller,relay",
    }
    tenant = f"s-{uuid.uuid4().hex[:6]}"
    base = f"/api/v1/tenants/{tenant}/agents"
    try:
        plane.start()
        assert plane.http.post(base, json=_manifest("counter", archive)).status_code == 201
        plane.wait_agent(tenant, "counter", "Ready", timeout_s=180)
        sid = plane.agent(tenant, "counter")["status"]["sandboxID"]
        wait_until(lambda: count(sandboxes, sid) >= 10, 30, "the counter counts")

        answer = plane.http.post(f"{base}/counter/suspend")
        assert answer.status_code == 202, answer.text
        plane.kill()  # during the suspend: the request is committed, the checkpoint may run
        phase = plane_phase_after_restart(plane, tenant)
        assert phase in ("Ready", "Suspended")
        plane.wait_agent(tenant, "counter", "Suspended", timeout_s=120)
        suspended = plane.agent(tenant, "counter")
        assert suspended["status"]["suspension"]["memoryKept"] is True
        assert images(sandboxes) == {sid}, "one image, the suspended agent's"
        frozen = count(sandboxes, sid)

        answer = plane.http.post(f"{base}/counter/resume")
        assert answer.status_code == 202, answer.text
        plane.kill()  # during the resume
        assert plane_phase_after_restart(plane, tenant) in ("Starting", "Ready", "Suspended")
        plane.wait_agent(tenant, "counter", "Ready", timeout_s=120)
        again = plane.agent(tenant, "counter")
        assert again["status"]["sandboxID"] == sid
        wait_until(lambda: count(sandboxes, sid) > frozen, 30, "the count goes on")
        starts = (sandboxes / sid / "agentos" / "starts").read_text().count("start")
        assert starts == 1, "restored from the checkpoint both times, never started afresh"
        wait_until(lambda: images(sandboxes) == set(), 30, "no image once resumed")
    finally:
        plane.stop()
        asyncio.run(_clean(env))
        subprocess.run(
            ["ctr", "--address", env["CONTAINERD_ADDRESS"], "namespaces", "rm", namespace],
            capture_output=True,
            check=False,
        )


def plane_phase_after_restart(plane: Plane, tenant: str) -> str:
    """Restart the killed plane; the agent's phase as soon as the API answers."""
    plane.start()
    answer = plane.http.get(f"/api/v1/tenants/{tenant}/agents/counter")
    assert answer.status_code == 200, "the agent is never lost"
    return str(answer.json()["status"]["phase"])
