"""Suspend and resume of gVisor sandboxes against raw runsc (adr/0019-suspend-resume.md).

    python -m bench.suspend [--rounds 5] [--agents 10]

On the real containerd (gVisor as the runc shim's BinaryName, the counter agent of
tests/agents/memory_counter.sh), one JSON line per figure:
- `suspend_p50_s` / `resume_p50_s`: ContainerdRuntime.suspend (checkpoint through containerd's
  Tasks.Checkpoint, task deleted) and .resume (address back, restore, task running);
- `raw_checkpoint_p50_s` / `raw_restore_p50_s`: `runsc checkpoint` and `runsc restore
  --detach` of the same kind of sandbox in the same run, by hand through the runsc wrapper
  in the shim's bundle folder (the restored sandbox then runs outside containerd and is
  killed by runsc);
- `host_memory`: RSS of N running sandboxes' processes against N suspended (0: no process),
  and the host's MemAvailable in both states.
Needs the services' environment (`.services/env`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from controlplane.runtimes.base import SandboxSpec, SandboxState
from controlplane.runtimes.containerd.runtime import ContainerdRuntime
from harness.waiting import eventually

COUNTER = Path(__file__).resolve().parents[1] / "tests" / "agents" / "memory_counter.sh"
# containerd's state folder sits beside its socket (hack/services.d/30-containerd.sh).
SHIM_STATE = (
    Path(os.environ.get("CONTAINERD_ADDRESS", "/run/containerd/x")).parent
    / "state"
    / "io.containerd.runtime.v2.task"
)


def emit(**figure: object) -> None:
    print(json.dumps({"bench": "suspend", **figure}), flush=True)


def spec(state: Path) -> SandboxSpec:
    return SandboxSpec(
        sandbox_id=f"bench-susp-{uuid.uuid4().hex[:8]}",
        agent_id=str(uuid.uuid4()),
        tenant="bench",
        name="counter",
        image="oci-archive:" + os.environ["AGENTOS_EXAMPLE_IMAGE_ARCHIVE"],
        runtime_class="gvisor",
        command=["sh", "-c", COUNTER.read_text()],
        memory_bytes=64 * 2**20,
    )


async def started(rt: ContainerdRuntime, state: Path) -> str:
    s = spec(state)
    await rt.create(s)
    await rt.start(s.sandbox_id)
    count = rt.sandbox_dir(s.sandbox_id) / "agentos" / "count"

    async def counting() -> bool:
        return count.exists()

    await eventually(counting, timeout_s=60, what="the counter counts")
    return s.sandbox_id


def runsc(rt: ContainerdRuntime, sid: str, *args: str) -> float:
    """One raw runsc command through the wrapper, in the shim's bundle folder; seconds."""
    bundle = SHIM_STATE / rt.namespace / sid
    root = f"/run/containerd/runc/{rt.namespace}"
    began = time.perf_counter()
    subprocess.run(
        [os.environ["AGENTOS_RUNSC_BINARY"], "--root", root, *args, sid],
        cwd=bundle,
        check=True,
        # Not pipes: a detached, restored sandbox would hold them open.
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120,
    )
    return time.perf_counter() - began


async def raw_round(rt: ContainerdRuntime, state: Path) -> tuple[float, float]:
    sid = await started(rt, state)
    image = Path(tempfile.mkdtemp(dir=state))
    checkpoint_s = await asyncio.to_thread(runsc, rt, sid, "checkpoint", "--image-path", str(image))
    await asyncio.sleep(0.2)  # the shim reaps the stopped sandbox
    await asyncio.to_thread(runsc, rt, sid, "delete", "--force")
    address = await rt.sandbox_address(sid)
    if rt.network is not None and address:
        await rt.network.restore_address(sid, address)
    bundle = str(SHIM_STATE / rt.namespace / sid)
    restore_s = await asyncio.to_thread(
        runsc, rt, sid, "restore", "--image-path", str(image), "--bundle", bundle, "--detach"
    )
    with contextlib.suppress(subprocess.CalledProcessError):
        await asyncio.to_thread(runsc, rt, sid, "delete", "--force")
    await rt.remove(sid)
    return checkpoint_s, restore_s


async def ours_round(rt: ContainerdRuntime, state: Path) -> tuple[float, float]:
    sid = await started(rt, state)
    began = time.perf_counter()
    await rt.suspend(sid)
    suspend_s = time.perf_counter() - began

    async def no_task() -> bool:  # the checkpointed task is deleted just after the suspend
        return (await rt.status(sid)).state is SandboxState.CREATED

    await eventually(no_task, timeout_s=30, what="the stopped task deleted")
    began = time.perf_counter()
    await rt.resume(sid)
    resume_s = time.perf_counter() - began
    await rt.remove(sid)
    return suspend_s, resume_s


def rss_bytes(pids: list[int]) -> int:
    """RSS of `pids` and their children (the sandbox's processes), bytes."""
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            status = (proc / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields.get("PPid", "0")) in pids or int(proc.name) in pids:
            total += int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
    return total


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


async def memory(rt: ContainerdRuntime, state: Path, n: int) -> None:
    ids = [await started(rt, state) for _ in range(n)]
    await asyncio.sleep(1)
    pids = [p for sid in ids if (p := (await rt.status(sid)).pid)]
    running_rss, running_avail = rss_bytes(pids), mem_available()
    for sid in ids:
        await rt.suspend(sid)
    await asyncio.sleep(1)
    suspended_avail = mem_available()
    images = sum(
        p.stat().st_size for sid in ids for p in (rt.sandbox_dir(sid) / "checkpoint").rglob("*")
    )
    emit(
        figure="host_memory",
        agents=n,
        running_rss_bytes=running_rss,
        suspended_rss_bytes=rss_bytes(pids),
        mem_available_running_bytes=running_avail,
        mem_available_suspended_bytes=suspended_avail,
        checkpoint_images_bytes=images,
    )
    for sid in ids:
        await rt.remove(sid)


async def main(rounds: int, agents: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-suspend-") as tmp:
        state = Path(tmp)
        env = {**os.environ, "AGENTOS_SANDBOX_DIR": str(state), "AGENTOS_RUNSC_RUNTIME": ""}
        rt = ContainerdRuntime.from_env(env)
        try:
            ours = [await ours_round(rt, state) for _ in range(rounds)]
            raw = [await raw_round(rt, state) for _ in range(rounds)]
            p50 = statistics.median
            s, r = p50(x for x, _ in ours), p50(y for _, y in ours)
            rc, rr = p50(x for x, _ in raw), p50(y for _, y in raw)
            emit(
                figure="suspend_p50_s",
                value=round(s, 4),
                raw_checkpoint_p50_s=round(rc, 4),
                ratio=round(s / rc, 2),
                rounds=rounds,
            )
            emit(
                figure="resume_p50_s",
                value=round(r, 4),
                raw_restore_p50_s=round(rr, 4),
                ratio=round(r / rr, 2),
                rounds=rounds,
            )
            await memory(rt, state, agents)
        finally:
            for sid in await rt.list_sandboxes():
                if sid.startswith("bench-susp-"):
                    await rt.remove(sid)
            await rt.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--agents", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.agents))
