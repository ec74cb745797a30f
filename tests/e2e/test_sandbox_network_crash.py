"""kill -9 of the controller while sandboxes start, then a restart: every network namespace,
address lease and firewall element has its sandbox, and none is left once the agents go.

`agentos serve` runs as a subprocess on the real PostgreSQL, NATS, containerd (runc and
gVisor), CNI plugins and nftables, in a containerd namespace of its own, so its sweep and
ours see only this test's sandboxes.
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

AGENTS = 4
HELD = ("containers", "netns", "leases", "elements")
CONTAINERD_KEYS = (
    "CONTAINERD_ADDRESS",
    "CONTAINERD_SNAPSHOTTER",
    "AGENTOS_RUNC_RUNTIME",
    "AGENTOS_RUNSC_RUNTIME",
    "AGENTOS_SANDBOX_NETWORK",
    "AGENTOS_SANDBOX_BRIDGE",
    "AGENTOS_SANDBOX_SUBNET",
    "AGENTOS_CNI_PATH",
    "AGENTOS_CNI_IPAM_DIR",
)


def _manifest(name: str, runtime_class: str, archive: str) -> dict[str, object]:
    port = 8080  # every agent on one port: each sandbox has its own network
    return {
        "apiVersion": "agentos.io/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": {
            "image": f"oci-archive:{archive}",
            "runtime": {"class": runtime_class},
            "env": [{"name": "AGENT_PORT", "value": str(port)}],
            "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}},
            "readiness": {"httpGet": {"port": port, "path": "/healthz"}, "periodSeconds": 0.5},
        },
    }


def held(env: dict[str, str]) -> dict[str, set[str]]:
    """What the host holds for the namespace of `env`: containers, network namespaces,
    address leases and firewall elements, each as the sandbox ids they belong to."""

    async def read() -> dict[str, set[str]]:
        runtime = ContainerdRuntime.from_env(env)
        net = runtime.network
        assert net is not None
        try:
            folder = net.settings.netns_dir / net.scope
            lease, label = f"{net.scope}.", f"{net.scope}/"
            elements = (await net.firewall.elements()).values()
            return {
                "containers": set(await runtime.list_sandboxes()),
                "netns": {p.name for p in folder.iterdir()} if folder.is_dir() else set(),
                "leases": {o[len(lease) :] for o in net.leases().values() if o.startswith(lease)},
                "elements": {o[len(label) :] for o in elements if o.startswith(label)},
            }
        finally:
            await runtime.close()

    return asyncio.run(read())


async def _clean(env: dict[str, str]) -> None:
    runtime = ContainerdRuntime.from_env(env)
    try:
        for sandbox in await runtime.list_sandboxes():
            await runtime.remove(sandbox)
        await runtime.sweep(set())
    finally:
        await runtime.close()


def test_kill_9_of_the_controller_while_sandboxes_start_leaves_nothing_unowned(
    tmp_path: Path, pg_url: str, nats_url: str
) -> None:
    """Half the agents on runc, half on gVisor, all listening on one port."""
    archive = service_setting("AGENTOS_EXAMPLE_IMAGE_ARCHIVE", "the example agent image")
    namespace = f"agentos-crash-{uuid.uuid4().hex[:8]}"
    env = {k: SERVICES_ENV.get(k) or os.environ.get(k, "") for k in CONTAINERD_KEYS}
    env |= {
        "CONTAINERD_NAMESPACE": namespace,
        "AGENTOS_SANDBOX_DIR": str(tmp_path / "sandboxes"),
    }
    plane = Plane(tmp_path, pg_url, nats_url)
    plane.env |= env | {
        "AGENTOS_RUNTIME": "containerd",
        "AGENTOS_COMPONENTS": "api,controller,relay",
    }
    sandbox_env = dict(plane.env)
    tenant = f"n-{uuid.uuid4().hex[:6]}"
    names = [f"crash-{i}" for i in range(AGENTS)]
    try:
        plane.start()
        for i, name in enumerate(names):
            body = _manifest(name, "gvisor" if i % 2 else "runc", archive)
            answer = plane.http.post(f"/api/v1/tenants/{tenant}/agents", json=body)
            assert answer.status_code == 201, answer.text
        # kill -9 as soon as the first sandbox has its network, before all are Ready.
        wait_until(lambda: held(sandbox_env)["netns"], 120, "a sandbox's network namespace")
        plane.kill()
        plane.start()
        for name in names:
            plane.wait_agent(tenant, name, "Ready", timeout_s=180)
        owned = {plane.agent(tenant, n)["status"]["sandboxID"] for n in names}
        # The restarted controller's sweep ran: what is held is exactly what is owned.
        wait_until(lambda: held(sandbox_env)["netns"] == owned, 60, "only owned namespaces")
        assert held(sandbox_env) == {k: owned for k in HELD}
        for name in names:
            assert plane.http.delete(f"/api/v1/tenants/{tenant}/agents/{name}").status_code in (
                200,
                202,
            )
        wait_until(
            lambda: plane.http.get(f"/api/v1/tenants/{tenant}/agents").json()["items"] == [],
            120,
            "the agents deleted",
        )
        assert held(sandbox_env) == {k: set() for k in HELD}
    finally:
        plane.stop()
        asyncio.run(_clean(sandbox_env))
        subprocess.run(
            ["ctr", "--address", env["CONTAINERD_ADDRESS"], "namespaces", "rm", namespace],
            capture_output=True,
            check=False,
        )
