"""ContainerdRuntime against the real containerd from `make services`, under runc and gVisor.

Everything is checked from outside the runtime's own answers where it can be: `ctr` for what
containerd holds, /proc and the cgroup filesystem for what the kernel sees. No fixed sleeps:
conditions are polled until a deadline.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from controlplane.runtimes.base import (
    LABEL_AGENT_ID,
    LABEL_MANAGED,
    LABEL_TENANT,
    ProbeSpec,
    SandboxError,
    SandboxSpec,
    SandboxState,
)
from controlplane.runtimes.containerd.runtime import ContainerdRuntime
from harness.ports import free_port
from harness.waiting import eventually
from tests.conftest import service_setting

pytestmark = pytest.mark.containerd

DEADLINE_S = 30.0
CPU_MILLIS = 250
MEMORY_BYTES = 96 * 1024 * 1024


@pytest.fixture(scope="module")
def settings() -> dict[str, str]:
    keys = {
        "CONTAINERD_ADDRESS": "containerd",
        "CONTAINERD_NAMESPACE": "containerd",
        "CONTAINERD_SNAPSHOTTER": "containerd",
        "AGENTOS_RUNC_RUNTIME": "containerd (runc)",
        "AGENTOS_RUNSC_RUNTIME": "containerd (gVisor)",
        "AGENTOS_RUNSC_BINARY": "containerd (gVisor)",
        "AGENTOS_EXAMPLE_IMAGE": "containerd example agent image",
        "AGENTOS_CNI_IPAM_DIR": "containerd (sandbox network)",
    }
    return {key: service_setting(key, service) for key, service in keys.items()}


def ctr(settings: dict[str, str], *args: str) -> str:
    """`ctr` output (stdout) against the test containerd and namespace; fails on error."""
    result = subprocess.run(
        [
            "ctr",
            "--address",
            settings["CONTAINERD_ADDRESS"],
            "--namespace",
            settings["CONTAINERD_NAMESPACE"],
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"ctr {' '.join(args)}: {result.stderr}"
    return result.stdout


@pytest.fixture
async def runtime(settings: dict[str, str], tmp_path: Path) -> AsyncIterator[ContainerdRuntime]:
    env = {**settings, "AGENTOS_SANDBOX_DIR": str(tmp_path / "sandboxes")}
    rt = ContainerdRuntime.from_env(env)
    yield rt
    await rt.close()


NewSpec = Callable[..., SandboxSpec]


@pytest.fixture
async def new_spec(runtime: ContainerdRuntime, settings: dict[str, str]) -> AsyncIterator[NewSpec]:
    """SandboxSpec factory: a unique sandbox id per call, removed after the test."""
    created: list[str] = []

    def make(runtime_class: str, **overrides: Any) -> SandboxSpec:
        sandbox_id = f"it-{runtime_class}-{uuid.uuid4().hex[:10]}"
        created.append(sandbox_id)
        fields: dict[str, Any] = {
            "sandbox_id": sandbox_id,
            "agent_id": f"agent-{sandbox_id}",
            "tenant": "acme",
            "name": "example-agent",
            "image": settings["AGENTOS_EXAMPLE_IMAGE"],
            "runtime_class": runtime_class,
            **overrides,
        }
        return SandboxSpec(**fields)

    yield make
    for sandbox_id in created:  # whatever a failed test left behind
        await runtime.remove(sandbox_id)


def cgroup_limits(pid: int) -> tuple[int, int | None]:
    """(memory limit in bytes, CFS quota in µs or None) of the cgroup `pid` is in."""
    paths = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(","):
            paths[c] = path
    if "memory" in paths:  # cgroup v1 (hybrid hosts like this one)
        root = Path("/sys/fs/cgroup")
        memory = int(
            (root / "memory" / paths["memory"].lstrip("/") / "memory.limit_in_bytes").read_text()
        )
        quota = int((root / "cpu" / paths["cpu"].lstrip("/") / "cpu.cfs_quota_us").read_text())
        return memory, (None if quota < 0 else quota)
    group = Path("/sys/fs/cgroup") / paths[""].lstrip("/")  # cgroup v2
    cpu_max = (group / "cpu.max").read_text().split()[0]
    return int((group / "memory.max").read_text()), (None if cpu_max == "max" else int(cpu_max))


def snapshot_keys(settings: dict[str, str]) -> list[str]:
    out = ctr(settings, "snapshots", "--snapshotter", settings["CONTAINERD_SNAPSHOTTER"], "ls")
    return [line.split()[0] for line in out.splitlines()[1:] if line.strip()]


@pytest.mark.parametrize("runtime_class", ["runc", "gvisor"])
async def test_sandbox_lifecycle(
    runtime: ContainerdRuntime,
    new_spec: NewSpec,
    settings: dict[str, str],
    runtime_class: str,
) -> None:
    port = free_port()
    http = ProbeSpec(http_port=port, http_path="/healthz", timeout_s=2.0)
    spec = new_spec(
        runtime_class,
        env={"AGENT_PORT": str(port)},
        cpu_millis=CPU_MILLIS,
        memory_bytes=MEMORY_BYTES,
        config={"greeting": "hello", "n": 1},
        probe=http,
    )
    sid = spec.sandbox_id

    created = await runtime.create(spec)
    assert created.state == SandboxState.CREATED, created
    again = await runtime.create(spec)  # idempotent
    assert again.state == SandboxState.CREATED
    assert again.pid == created.pid
    assert (await runtime.list_sandboxes())[sid] == spec.agent_id

    # What containerd holds: labels, runtime, and the limits in the OCI spec.
    info = json.loads(ctr(settings, "containers", "info", sid))
    assert info["Labels"][LABEL_MANAGED] == "true"
    assert info["Labels"][LABEL_AGENT_ID] == spec.agent_id
    assert info["Labels"][LABEL_TENANT] == "acme"
    # gVisor runs through the runc shim with runsc as BinaryName when both are set (from_env).
    want_runtime = settings[
        "AGENTOS_RUNC_RUNTIME" if runtime_class == "runc" else "AGENTOS_RUNSC_RUNTIME"
    ]
    if runtime_class == "gvisor" and settings["AGENTOS_RUNSC_BINARY"]:
        want_runtime = "io.containerd.runc.v2"
    assert info["Runtime"]["Name"] == want_runtime
    oci = info["Spec"]
    assert oci["linux"]["resources"]["memory"]["limit"] == MEMORY_BYTES
    assert oci["linux"]["resources"]["cpu"] == {"quota": CPU_MILLIS * 100, "period": 100_000}
    assert oci["process"]["user"]["uid"] == 65532, "the image's non-root user"
    assert oci["process"]["noNewPrivileges"] is True
    assert "CAP_SYS_ADMIN" not in oci["process"]["capabilities"]["bounding"]
    assert f"AGENT_PORT={port}" in oci["process"]["env"]
    assert "AGENTOS_CONFIG_FILE=/agentos/config.json" in oci["process"]["env"]
    net = [ns for ns in oci["linux"]["namespaces"] if ns["type"] == "network"]
    assert runtime.network is not None
    assert net == [{"type": "network", "path": str(runtime.network.netns_path(sid))}]

    started = await runtime.start(sid)
    assert started.state == SandboxState.RUNNING, started
    assert started.pid
    assert (await runtime.start(sid)).pid == started.pid  # a running one is left alone
    assert sid in ctr(settings, "tasks", "ls", "-q").split()

    await eventually(lambda: runtime.probe(sid, http), DEADLINE_S, "the agent's /healthz")
    status = await runtime.status(sid)
    assert status.state == SandboxState.RUNNING
    assert status.pid == started.pid

    # The runtime class really is the one asked for: under gVisor the task's process on the
    # host is runsc's sandbox (the Sentry), under runc it is the agent's own httpd.
    cmdline = Path(f"/proc/{status.pid}/cmdline").read_bytes().split(b"\0")
    if runtime_class == "gvisor":
        assert cmdline[0] == b"runsc-sandbox", cmdline
    else:
        assert b"httpd" in cmdline, cmdline
    # ... and the limits are on the cgroup the kernel put that process in.
    memory, quota = cgroup_limits(status.pid)
    assert memory == MEMORY_BYTES
    assert quota == CPU_MILLIS * 100

    # The config file and a writable heartbeat under /agentos, as the non-root agent.
    assert await runtime.exec(sid, ["sh", "-c", 'grep -q hello "$AGENTOS_CONFIG_FILE"'], 10) == 0
    heartbeat = ProbeSpec(heartbeat=True, period_s=10)
    assert not await runtime.probe(sid, heartbeat)
    assert await runtime.exec(sid, ["sh", "-c", 'touch "$AGENTOS_HEARTBEAT_FILE"'], 10) == 0
    assert await runtime.probe(sid, heartbeat)
    assert await runtime.probe(sid, ProbeSpec(exec_command=["true"], timeout_s=10))
    assert not await runtime.probe(sid, ProbeSpec(exec_command=["false"], timeout_s=10))
    assert not await runtime.probe(sid, ProbeSpec(http_port=port, http_path="/missing"))

    logs = await runtime.logs(sid)
    assert f"example-agent: serving /healthz on :{port} as uid 65532" in logs
    assert (await runtime.logs(sid, tail_lines=1)).count("\n") <= 1

    # Kill the task's process on the host: the sandbox is seen to exit, by a signal.
    os.kill(status.pid, signal.SIGKILL)

    async def exited() -> bool:
        return (await runtime.status(sid)).state == SandboxState.EXITED

    await eventually(exited, DEADLINE_S, "the killed sandbox to exit")
    final = await runtime.status(sid)
    assert final.exit_code == 128 + signal.SIGKILL, final
    assert not await runtime.probe(sid, http)
    assert re.search(rf"^{sid}\s+\d+\s+STOPPED$", ctr(settings, "tasks", "ls"), re.MULTILINE)

    sandbox_dir = runtime.sandbox_dir(sid)
    assert sandbox_dir.is_dir()
    await runtime.remove(sid)
    assert (await runtime.status(sid)).state == SandboxState.MISSING
    assert sid not in ctr(settings, "tasks", "ls", "-q").split()
    assert sid not in ctr(settings, "containers", "ls", "-q").split()
    assert sid not in snapshot_keys(settings)
    assert sid not in await runtime.list_sandboxes()
    assert not sandbox_dir.exists()
    await runtime.remove(sid)  # removing a missing sandbox is fine
    await runtime.stop(sid)


@pytest.mark.parametrize("runtime_class", ["runc", "gvisor"])
async def test_stop_then_restart(
    runtime: ContainerdRuntime,
    new_spec: NewSpec,
    settings: dict[str, str],
    runtime_class: str,
) -> None:
    # A shell that ends on SIGTERM, or ignores it once /agentos/ignore-term exists.
    script = (
        'if [ -e /agentos/ignore-term ]; then trap "" TERM; else trap "echo bye; exit 3" TERM; fi;'
        " echo up; while :; do sleep 1; done"
    )
    spec = new_spec(runtime_class, command=["sh", "-c", script])
    sid = spec.sandbox_id
    await runtime.create(spec)
    first = await runtime.start(sid)
    assert first.state == SandboxState.RUNNING

    async def says_up() -> bool:
        return "up" in await runtime.logs(sid)

    await eventually(says_up, DEADLINE_S, "the shell to start")
    began = time.monotonic()
    await runtime.stop(sid, timeout_s=20)
    assert time.monotonic() - began < 10, "SIGTERM alone should have ended it"
    stopped = await runtime.status(sid)
    assert stopped.state == SandboxState.EXITED
    assert stopped.exit_code == 3
    assert "bye" in await runtime.logs(sid)
    await runtime.stop(sid)  # stopping an exited sandbox is fine

    # An exited sandbox starts again, with a new task; this time it ignores SIGTERM.
    (runtime.sandbox_dir(sid) / "agentos" / "ignore-term").touch()
    restarted = await runtime.start(sid)
    assert restarted.state == SandboxState.RUNNING
    assert restarted.pid != first.pid
    await eventually(
        lambda: runtime.probe(sid, ProbeSpec(exec_command=["true"])), DEADLINE_S, "restart"
    )
    await runtime.stop(sid, timeout_s=0.5)  # then SIGKILL
    killed = await runtime.status(sid)
    assert killed.state == SandboxState.EXITED
    assert killed.exit_code == 128 + signal.SIGKILL
    await runtime.remove(sid)
    assert sid not in ctr(settings, "containers", "ls", "-q").split()


async def test_missing_binary_fails_and_is_removable_runc(
    runtime: ContainerdRuntime, new_spec: NewSpec, settings: dict[str, str]
) -> None:
    # runc looks for the binary at task create: the container stays, without a task.
    spec = new_spec("runc", command=["/no/such/binary"])
    sid = spec.sandbox_id
    with pytest.raises(SandboxError) as err:
        await runtime.create(spec)
    assert err.value.reason == "CreateFailed"
    assert "/no/such/binary" in err.value.message
    assert (await runtime.status(sid)).state == SandboxState.CREATED
    with pytest.raises(SandboxError) as err:
        await runtime.start(sid)
    assert err.value.reason == "StartFailed"
    await runtime.remove(sid)
    assert sid not in ctr(settings, "containers", "ls", "-q").split()
    assert (await runtime.status(sid)).state == SandboxState.MISSING


async def test_missing_binary_fails_and_is_removable_gvisor(
    runtime: ContainerdRuntime, new_spec: NewSpec, settings: dict[str, str]
) -> None:
    # runsc looks at start and leaves the task "created", a state in which runsc 20221219
    # cannot signal it; remove() must still clear it.
    spec = new_spec("gvisor", command=["/no/such/binary"])
    sid = spec.sandbox_id
    assert (await runtime.create(spec)).state == SandboxState.CREATED
    with pytest.raises(SandboxError) as err:
        await runtime.start(sid)
    assert err.value.reason == "StartFailed"
    assert "/no/such/binary" in err.value.message
    assert (await runtime.status(sid)).state == SandboxState.CREATED
    assert re.search(rf"^{sid}\s+\d+\s+CREATED$", ctr(settings, "tasks", "ls"), re.MULTILINE)
    await runtime.stop(sid)  # nothing runs: no error
    await runtime.remove(sid)
    assert sid not in ctr(settings, "tasks", "ls", "-q").split()
    assert sid not in ctr(settings, "containers", "ls", "-q").split()
    assert sid not in snapshot_keys(settings)
    assert (await runtime.status(sid)).state == SandboxState.MISSING


async def test_bad_requests_leave_nothing_behind(
    runtime: ContainerdRuntime, new_spec: NewSpec, settings: dict[str, str]
) -> None:
    missing_image = new_spec("runc", image="localhost/agentos/nope:0")
    with pytest.raises(SandboxError) as err:
        await runtime.create(missing_image)
    assert err.value.reason == "ImageNotFound"
    assert (await runtime.status(missing_image.sandbox_id)).state == SandboxState.MISSING

    unknown_class = new_spec("kata")
    with pytest.raises(SandboxError) as err:
        await runtime.create(unknown_class)
    assert err.value.reason == "UnknownRuntimeClass"

    with pytest.raises(SandboxError) as err:
        await runtime.start("it-never-created")
    assert err.value.reason == "NotFound"
    assert await runtime.logs("it-never-created") == ""
    assert not await runtime.probe("it-never-created", ProbeSpec(heartbeat=True))
    await runtime.remove("it-never-created")
    listed = ctr(settings, "containers", "ls", "-q").split()
    assert missing_image.sandbox_id not in listed
    assert unknown_class.sandbox_id not in listed


@pytest.fixture
async def fresh_namespace(settings: dict[str, str], tmp_path: Path) -> AsyncIterator[Any]:
    """A runtime on a containerd namespace of its own (nothing imported), emptied after."""
    namespace = f"agentos-import-{uuid.uuid4().hex[:8]}"
    ns_settings = {**settings, "CONTAINERD_NAMESPACE": namespace}
    rt = ContainerdRuntime.from_env({**ns_settings, "AGENTOS_SANDBOX_DIR": str(tmp_path / "sb")})
    yield rt, ns_settings
    for sid in await rt.list_sandboxes():
        await rt.remove(sid)
    await rt.close()
    for image in ctr(ns_settings, "images", "ls", "-q").split():
        ctr(ns_settings, "images", "rm", "--sync", image)
    for lease in ctr(ns_settings, "leases", "ls", "-q").split():
        ctr(ns_settings, "leases", "rm", "--sync", lease)
    subprocess.run(
        ["ctr", "--address", settings["CONTAINERD_ADDRESS"], "namespaces", "rm", namespace],
        capture_output=True,
        timeout=60,
        check=False,
    )


async def test_an_oci_archive_is_imported_through_the_api_and_runs(
    fresh_namespace: Any,
) -> None:
    rt, ns_settings = fresh_namespace
    archive = Path(service_setting("AGENTOS_EXAMPLE_IMAGE_ARCHIVE", "containerd example image"))
    assert ctr(ns_settings, "images", "ls", "-q").split() == []
    port = free_port()
    spec = SandboxSpec(
        sandbox_id=f"it-archive-{uuid.uuid4().hex[:8]}",
        agent_id="agent-archive",
        tenant="acme",
        name="archived",
        image=f"oci-archive:{archive}",
        runtime_class="runc",
        env={"AGENT_PORT": str(port)},
        probe=ProbeSpec(http_port=port, http_path="/healthz"),
    )
    await rt.create(spec)
    await rt.start(spec.sandbox_id)
    assert await eventually(lambda: rt.probe(spec.sandbox_id, spec.probe), DEADLINE_S)
    index = json.loads(
        subprocess.run(
            ["tar", "xOf", str(archive), "index.json"], capture_output=True, check=True
        ).stdout
    )
    manifest_digest = index["manifests"][0]["digest"]
    name = f"oci-archive:{archive}@{manifest_digest}"
    assert ctr(ns_settings, "images", "ls", "-q").split() == [name]
    assert f"agentos-image-{manifest_digest[7:39]}" in ctr(ns_settings, "leases", "ls", "-q")
    blobs_before = ctr(ns_settings, "content", "ls", "-q").split()
    assert manifest_digest in blobs_before
    # A second import is a lookup: same name, nothing written again.
    assert await rt.import_archive(archive) == name
    assert ctr(ns_settings, "content", "ls", "-q").split() == blobs_before


async def test_a_corrupt_oci_archive_is_refused_and_leaves_no_image(
    fresh_namespace: Any, tmp_path: Path
) -> None:
    rt, ns_settings = fresh_namespace
    source = Path(service_setting("AGENTOS_EXAMPLE_IMAGE_ARCHIVE", "containerd example image"))
    unpacked = tmp_path / "layout"
    unpacked.mkdir()
    subprocess.run(["tar", "xf", str(source), "-C", str(unpacked)], check=True)
    biggest = max((unpacked / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    data = bytearray(biggest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the layer
    biggest.write_bytes(bytes(data))
    corrupt = tmp_path / "corrupt.tar"
    subprocess.run(["tar", "cf", str(corrupt), "-C", str(unpacked), "."], check=True)
    with pytest.raises(SandboxError) as caught:
        await rt.import_archive(corrupt)
    assert caught.value.reason == "InvalidImage"
    assert "does not match its digest" in caught.value.message
    assert ctr(ns_settings, "images", "ls", "-q").split() == []
    with pytest.raises(SandboxError) as missing:
        await rt.import_archive(tmp_path / "absent.tar")
    assert missing.value.reason == "InvalidImage"
