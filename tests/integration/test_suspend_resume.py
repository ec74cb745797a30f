"""Suspend and resume on the real containerd, with runsc and runc (adr/0019-suspend-resume.md).

The agent is tests/agents/memory_counter.sh: it counts in a shell variable and writes the
count out, so a count that goes on after a resume proves memory was kept; each fresh start
appends to /agentos/starts; /tmp/kept is a file of its own root filesystem. Absent tasks are
checked through containerd (`ctr tasks ls`).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import yaml
from nats.aio.client import Client as NATS
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.controllers.agents.sandbox import probe_spec
from controlplane.domain.agents.model import Agent
from controlplane.runtimes.base import Runtime, SandboxError, SandboxSpec, SandboxState
from controlplane.runtimes.capabilities import capabilities
from controlplane.runtimes.containerd.runtime import ContainerdRuntime
from controlplane.runtimes.containerd.suspend import checkpoint_dir
from controlplane.service import runs, suspension
from harness.ports import free_port
from harness.waiting import eventually
from tests.conftest import SERVICES_ENV, service_setting
from tests.integration.lifecycle_harness import control_plane, manifest
from tests.unit.sdk.fake_gateway import FakeGateway

pytestmark = pytest.mark.containerd

COUNTER = Path(__file__).resolve().parents[1] / "agents" / "memory_counter.sh"
TOOL_AGENT = Path(__file__).resolve().parents[2] / "examples" / "agents" / "tool-agent-runc.yaml"


def suspend_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The services' settings with gVisor as the runc shim's BinaryName (the only way
    containerd 1.6 checkpoints it; AGENTOS_RUNSC_RUNTIME unset)."""
    service_setting("CONTAINERD_ADDRESS", "containerd")
    env = {**SERVICES_ENV, **os.environ, "AGENTOS_SANDBOX_DIR": str(tmp_path / "sandboxes")}
    env["AGENTOS_RUNSC_RUNTIME"] = ""
    return env | extra


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[ContainerdRuntime]:
    rt = ContainerdRuntime.from_env(suspend_env(tmp_path))
    made: list[str] = []
    rt.made = made  # type: ignore[attr-defined]
    yield rt
    for sid in made:
        await rt.remove(sid)
    await rt.close()


def counter_spec(runtime_class: str) -> SandboxSpec:
    return SandboxSpec(
        sandbox_id=f"susp-{runtime_class}-{uuid.uuid4().hex[:8]}",
        agent_id=str(uuid.uuid4()),
        tenant="team-a",
        name="counter",
        image="oci-archive:" + service_setting("AGENTOS_EXAMPLE_IMAGE_ARCHIVE", "the image"),
        runtime_class=runtime_class,
        command=["sh", "-c", COUNTER.read_text()],
        memory_bytes=64 * 2**20,
    )


def ctr_tasks() -> str:
    done = subprocess.run(
        [
            "ctr",
            "--address",
            service_setting("CONTAINERD_ADDRESS", "containerd"),
            "-n",
            service_setting("CONTAINERD_NAMESPACE", "containerd"),
            "tasks",
            "ls",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def task_running(sid: str) -> bool:
    """containerd lists a running task for `sid` (a checkpointed one is STOPPED, then gone)."""
    rows = [line.split() for line in ctr_tasks().splitlines()[1:]]
    return any(row[0] == sid and row[-1] == "RUNNING" for row in rows)


def count(runtime: ContainerdRuntime, sid: str) -> int:
    try:
        text = (runtime.sandbox_dir(sid) / "agentos" / "count").read_text().strip()
    except FileNotFoundError:
        return 0
    return int(text or 0)


async def until(check: Callable[[], bool], timeout_s: float = 30) -> None:
    async def checked() -> bool:
        return check()

    await eventually(checked, timeout_s=timeout_s)


def starts(runtime: ContainerdRuntime, sid: str) -> int:
    return (runtime.sandbox_dir(sid) / "agentos" / "starts").read_text().count("start")


async def running_counter(runtime: ContainerdRuntime, runtime_class: str) -> tuple[str, int]:
    """A started counter past 10; its sandbox id and pid."""
    spec = counter_spec(runtime_class)
    runtime.made.append(spec.sandbox_id)  # type: ignore[attr-defined]
    await runtime.create(spec)
    status = await runtime.start(spec.sandbox_id)
    assert status.pid is not None
    await until(lambda: count(runtime, spec.sandbox_id) >= 10)
    return spec.sandbox_id, status.pid


async def test_containerd_has_the_suspends_capability(runtime: ContainerdRuntime) -> None:
    assert capabilities(runtime).suspends is runtime


async def test_a_gvisor_sandbox_resumes_with_its_memory_files_and_address(
    runtime: ContainerdRuntime,
) -> None:
    sid, pid = await running_counter(runtime, "gvisor")
    address = await runtime.sandbox_address(sid)

    suspension = await runtime.suspend(sid)
    assert suspension.memory_kept and suspension.image_bytes > 0
    assert Path(suspension.image_path) == checkpoint_dir(runtime.sandbox_dir(sid))
    assert not task_running(sid), "the suspended sandbox holds no process"
    await until(lambda: sid not in ctr_tasks())  # the stopped task is deleted just after
    assert (await runtime.status(sid)).state is SandboxState.CREATED
    assert not Path(f"/proc/{pid}").exists(), "the sandbox's processes (and memory) are gone"
    frozen = count(runtime, sid)
    await asyncio.sleep(0.5)
    assert count(runtime, sid) == frozen

    resumed = await runtime.resume(sid)
    assert resumed.state is SandboxState.RUNNING and sid in ctr_tasks()
    await until(lambda: count(runtime, sid) > frozen)
    assert count(runtime, sid) < frozen + 100, "the count went on from where it was"
    assert starts(runtime, sid) == 1, "the process was restored, not started again"
    assert await runtime.exec(sid, ["test", "-f", "/tmp/kept"], 10) == 0
    assert await runtime.sandbox_address(sid) == address
    assert not checkpoint_dir(runtime.sandbox_dir(sid)).exists(), "the image went at resume"


async def test_suspend_and_resume_are_idempotent(runtime: ContainerdRuntime) -> None:
    sid, _ = await running_counter(runtime, "gvisor")
    first = await runtime.suspend(sid)
    again = await runtime.suspend(sid)
    assert again == first
    await runtime.resume(sid)
    assert (await runtime.resume(sid)).state is SandboxState.RUNNING
    assert starts(runtime, sid) == 1


async def test_a_runc_sandbox_keeps_its_files_but_not_its_memory(
    runtime: ContainerdRuntime,
) -> None:
    sid, pid = await running_counter(runtime, "runc")
    suspension = await runtime.suspend(sid)
    assert not suspension.memory_kept and suspension.image_bytes == 0
    assert not task_running(sid)
    assert not Path(f"/proc/{pid}").exists()
    before = count(runtime, sid)

    await runtime.resume(sid)
    await until(lambda: starts(runtime, sid) == 2)
    # The file still holds `before` until the new process writes: wait for that write.
    await until(lambda: count(runtime, sid) != before)
    assert count(runtime, sid) < before, "memory is lost: the count started over"
    assert await runtime.exec(sid, ["test", "-f", "/tmp/kept"], 10) == 0, "files are kept"


async def test_gvisor_by_runtime_name_cannot_suspend(tmp_path: Path) -> None:
    name = service_setting("AGENTOS_RUNSC_RUNTIME", "gVisor by runtime name")
    rt = ContainerdRuntime.from_env(
        suspend_env(tmp_path, AGENTOS_RUNSC_RUNTIME=name, AGENTOS_RUNSC_BINARY="")
    )
    try:
        rt.made = []  # type: ignore[attr-defined]
        sid, _ = await running_counter(rt, "gvisor")
        with pytest.raises(SandboxError) as raised:
            await rt.suspend(sid)
        assert raised.value.reason == "SuspendUnsupported"
        assert (await rt.status(sid)).state is SandboxState.RUNNING
    finally:
        for sid in rt.made:  # type: ignore[attr-defined]
            await rt.remove(sid)
        await rt.close()


async def test_the_sweep_removes_a_checkpoint_image_no_sandbox_owns(
    runtime: ContainerdRuntime,
) -> None:
    sid, _ = await running_counter(runtime, "gvisor")
    await runtime.suspend(sid)
    image = checkpoint_dir(runtime.sandbox_dir(sid))
    assert image.is_dir()
    await runtime.sweep(keep={sid})
    assert image.is_dir(), "an owned image is kept"
    await runtime.sweep(keep=set())
    assert not image.exists()


# -- through the control plane (real PostgreSQL, NATS and containerd) ------------------------


def counter_manifest(name: str, runtime_class: str, **runs: object) -> dict[str, object]:
    return manifest(
        name,
        image="oci-archive:" + service_setting("AGENTOS_EXAMPLE_IMAGE_ARCHIVE", "the image"),
        runtime={"class": runtime_class},
        command=["sh", "-c", COUNTER.read_text()],
        resources={"limits": {"cpu": "250m", "memory": "64Mi"}},
        readiness={"heartbeat": {}, "periodSeconds": 0.5},
        runs=runs,
    )


@pytest.mark.postgres
@pytest.mark.nats
async def test_an_agent_is_suspended_and_resumed_by_request_with_its_memory(
    pg_engine: AsyncEngine, pg_url: str, nc: NATS, runtime: ContainerdRuntime
) -> None:
    runtimes: dict[str, Runtime] = {"runc": runtime, "gvisor": runtime}
    async with control_plane(pg_engine, pg_url, nc, runtimes) as plane:
        await plane.apply("team-a", counter_manifest("counter", "gvisor"))
        ready = await plane.wait_phase("team-a", "counter", "Ready", timeout_s=120)
        sid = ready.status.sandboxID
        assert sid is not None
        await until(lambda: count(runtime, sid) >= 10)
        async with plane.uow() as uow:
            await suspension.suspend_agent(uow, "team-a", "counter")
        plane.controller.notify(ready.id)
        suspended = await plane.wait_phase("team-a", "counter", "Suspended", timeout_s=60)
        assert suspended.status.suspension is not None
        assert suspended.status.suspension["memoryKept"] is True
        assert suspended.status.suspension["imageBytes"] > 0
        assert not task_running(sid)
        frozen = count(runtime, sid)

        async with plane.uow() as uow:
            await suspension.resume_agent(uow, "team-a", "counter")
        plane.controller.notify(ready.id)
        again = await plane.wait_phase("team-a", "counter", "Ready", timeout_s=60)
        await until(lambda: count(runtime, sid) > frozen)
        assert starts(runtime, sid) == 1, "restored, not started again"
        history = await plane.history(again)
    assert history[-3:] == ["Suspended", "Starting", "Ready"]
    assert again.status.sandboxID == sid and again.status.suspension is None


@pytest.mark.postgres
@pytest.mark.nats
async def test_an_idle_agent_suspends_itself_and_a_run_sent_to_it_resumes_it(
    pg_engine: AsyncEngine, pg_url: str, nc: NATS, runtime: ContainerdRuntime
) -> None:
    runtimes: dict[str, Runtime] = {"runc": runtime, "gvisor": runtime}
    async with control_plane(pg_engine, pg_url, nc, runtimes) as plane:
        await plane.apply("team-a", counter_manifest("idler", "runc", idleSuspendSeconds=1))
        suspended = await plane.wait_phase("team-a", "idler", "Suspended", timeout_s=120)
        assert suspended.status.suspension is not None
        assert suspended.status.suspension["memoryKept"] is False, "runc: files only"
        assert not task_running(str(suspended.status.sandboxID))
        async with plane.uow() as uow:
            await runs.create_run(uow, "team-a", "idler", {"input": {"n": 1}})
        resumed = await plane.wait_phase("team-a", "idler", "Ready", timeout_s=60)
        history = await plane.history(resumed)
    assert history[-3:] == ["Suspended", "Starting", "Ready"]
    assert resumed.status.reason == "Ready"


@pytest.mark.postgres
@pytest.mark.nats
async def test_a_runtime_that_cannot_suspend_leaves_the_agent_ready_with_a_condition(
    pg_engine: AsyncEngine, pg_url: str, nc: NATS, tmp_path: Path
) -> None:
    name = service_setting("AGENTOS_RUNSC_RUNTIME", "gVisor by runtime name")
    by_name = ContainerdRuntime.from_env(
        suspend_env(tmp_path, AGENTOS_RUNSC_RUNTIME=name, AGENTOS_RUNSC_BINARY="")
    )
    try:
        runtimes: dict[str, Runtime] = {"runc": by_name, "gvisor": by_name}
        async with control_plane(pg_engine, pg_url, nc, runtimes) as plane:
            await plane.apply("team-a", counter_manifest("stubborn", "gvisor"))
            ready = await plane.wait_phase("team-a", "stubborn", "Ready", timeout_s=120)
            async with plane.uow() as uow:
                await suspension.suspend_agent(uow, "team-a", "stubborn")
            plane.controller.notify(ready.id)

            async def refused() -> bool:
                found = await plane.find("team-a", "stubborn")
                conditions = {c["type"]: c for c in found.status.conditions} if found else {}
                return conditions.get("Suspended", {}).get("reason") == "SuspendUnsupported"

            await eventually(refused, timeout_s=60)
            after = await plane.find("team-a", "stubborn")
    finally:
        await by_name.close()
    assert after is not None and after.status.phase == "Ready"
    assert after.status.suspension is None


# -- an SDK agent under gVisor: its long poll to the gateway is closed from the host --------


async def test_an_sdk_agent_long_polling_the_gateway_is_suspended_and_serves_a_run_after(
    tmp_path: Path,
) -> None:
    """The tool agent of examples/agents/ in the python image, under gVisor, long-polls a
    FakeGateway on the bridge's host address: the checkpoint goes through (the host resets
    the connections first), and after the resume the agent serves a run."""
    port = free_port()
    rt = ContainerdRuntime.from_env(suspend_env(tmp_path, AGENTOS_GATEWAY_PORT=str(port)))
    assert rt.network is not None
    gateway = FakeGateway()
    await gateway.start(rt.network.settings.host_address, port)
    manifest_ = Agent.model_validate(yaml.safe_load(TOOL_AGENT.read_text()))
    probe = probe_spec(manifest_.spec)
    env = {e.name: e.value for e in manifest_.spec.env}
    env |= {"AGENTOS_GATEWAY_URL": gateway.url, "AGENTOS_AGENT_TOKEN": gateway.token}
    spec = SandboxSpec(
        sandbox_id=f"susp-sdk-{uuid.uuid4().hex[:8]}",
        agent_id=str(uuid.uuid4()),
        tenant="team-a",
        name="tool-agent",
        image=service_setting("AGENTOS_PYTHON_IMAGE", "the python agent image"),
        runtime_class="gvisor",
        command=list(manifest_.spec.command),
        env=env,
        memory_bytes=128 << 20,
        probe=probe,
    )
    task = {"task": "compute (2+3)*4 and save it to out/result.txt"}
    try:
        await rt.create(spec)
        await rt.start(spec.sandbox_id)
        assert probe is not None
        await eventually(lambda: rt.probe(spec.sandbox_id, probe), 60, "Ready")
        first = gateway.submit(task)
        await gateway.wait_done(first.name, timeout_s=60)

        async def polling() -> bool:
            return bool(gateway.polling)

        await eventually(polling, 30, "the agent back in its long poll")

        suspension = await rt.suspend(spec.sandbox_id)
        assert suspension.memory_kept, "checkpointed despite the long poll"
        assert not task_running(spec.sandbox_id)
        await rt.resume(spec.sandbox_id)
        second = gateway.submit(task)
        await gateway.wait_done(second.name, timeout_s=60)
        assert second.result is not None and second.result["output"]["result"] == 20
    finally:
        await rt.remove(spec.sandbox_id)
        await gateway.stop()
        await rt.close()
