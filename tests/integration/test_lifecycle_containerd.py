"""Real sandboxed agents: the lifecycle on containerd with runc and with gVisor (runsc),
real PostgreSQL and the relay on real NATS. Results are checked through containerd."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.runtimes.containerd.runtime import ContainerdRuntime
from harness.ports import free_port
from tests.conftest import SERVICES_ENV, service_setting
from tests.integration.lifecycle_harness import control_plane, manifest
from tests.integration.outbox_helpers import stream_messages

pytestmark = [pytest.mark.containerd, pytest.mark.postgres, pytest.mark.nats]


@pytest.fixture
async def containerd(tmp_path: Path):
    service_setting("CONTAINERD_ADDRESS", "containerd")
    runtime = ContainerdRuntime.from_env(
        {**SERVICES_ENV, **os.environ, "AGENTOS_SANDBOX_DIR": str(tmp_path / "sandboxes")}
    )
    yield runtime
    await runtime.close()


def ctr(*args: str) -> str:
    done = subprocess.run(
        [
            "ctr",
            "--address",
            service_setting("CONTAINERD_ADDRESS", "containerd"),
            "-n",
            service_setting("CONTAINERD_NAMESPACE", "containerd"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def example_agent(name: str, runtime_class: str, **spec: object) -> dict:
    port = free_port()
    return manifest(
        name,
        image=service_setting("AGENTOS_EXAMPLE_IMAGE", "the example agent image"),
        runtime={"class": runtime_class},
        env=[{"name": "AGENT_PORT", "value": str(port)}],
        resources={"limits": {"cpu": "250m", "memory": "64Mi"}},
        readiness={"httpGet": {"port": port, "path": "/healthz"}, "periodSeconds": 0.5},
        **spec,
    )


@pytest.mark.parametrize("runtime_class", ["runc", "gvisor"])
async def test_sandboxed_agent_reaches_ready_then_recovers_from_a_killed_process(
    pg_engine: AsyncEngine,
    pg_url: str,
    nc: NATS,
    containerd: ContainerdRuntime,
    runtime_class: str,
) -> None:
    runtimes = {"runc": containerd, "gvisor": containerd}
    name = f"{runtime_class}-agent"
    async with control_plane(pg_engine, pg_url, nc, runtimes) as plane:
        await plane.apply("team-a", example_agent(name, runtime_class))
        ready = await plane.wait_phase("team-a", name, "Ready", timeout_s=120)
        assert await plane.history(ready) == ["Created", "Scheduled", "Starting", "Ready"]
        sandbox = ready.status.sandboxID
        assert sandbox in ctr("containers", "ls", "-q").split()
        task = await containerd.status(sandbox)
        cmdline = Path(f"/proc/{task.pid}/cmdline").read_bytes().split(b"\0")[0]
        if runtime_class == "gvisor":
            assert cmdline.endswith(b"runsc-sandbox"), cmdline
        else:
            assert b"runsc" not in cmdline, cmdline

        os.kill(task.pid, signal.SIGKILL)
        again = await plane.wait_phase("team-a", name, "Ready", restartCount=1, timeout_s=120)
        history = await plane.history(again)
        containers = ctr("containers", "ls", "-q").split()
    assert history[4:] == ["Failed", "Created", "Scheduled", "Starting", "Ready"]
    assert sandbox not in containers, "the failed sandbox was removed (compensation)"
    assert again.status.sandboxID in containers
    events = [
        m["envelope"]
        for m in await stream_messages(nc.jetstream())
        if m["envelope"]["agent_id"] == ready.id
    ]
    assert [e["payload"].get("to_phase") for e in events].count("Ready") == 2


async def test_deleting_a_sandboxed_agent_removes_its_container_and_task(
    pg_engine: AsyncEngine, pg_url: str, nc: NATS, containerd: ContainerdRuntime
) -> None:
    runtimes = {"runc": containerd, "gvisor": containerd}
    async with control_plane(pg_engine, pg_url, nc, runtimes) as plane:
        await plane.apply("team-a", example_agent("short-lived", "runc"))
        ready = await plane.wait_phase("team-a", "short-lived", "Ready", timeout_s=120)
        sandbox = ready.status.sandboxID
        assert sandbox in ctr("tasks", "ls")
        await plane.delete("team-a", "short-lived")
        await plane.wait_gone("team-a", "short-lived", timeout_s=120)
    assert sandbox not in ctr("containers", "ls", "-q").split()
    assert sandbox not in ctr("tasks", "ls")
    assert sandbox not in ctr("snapshots", "ls")
