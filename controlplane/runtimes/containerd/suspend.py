"""Suspend and resume of containerd sandboxes (adr/0019-suspend-resume.md).

gVisor (runsc through the runc v2 shim): containerd's `Tasks.Checkpoint` with the shim's
`CheckpointOptions{exit: true, image_path}` runs `runsc checkpoint --image-path`, which
saves the sandbox's memory and file state into `<state_dir>/<sandbox_id>/checkpoint/` and
stops it; the task is then deleted, so the suspended sandbox holds no process. Resume creates
a new task with the shim's `Options{criu_image_path}`, which makes the shim run `runsc
restore`; the sandbox's address and default route are put back on its veth first (gVisor's
own network stack took them off the namespace when it started). containerd 1.6 honours both
paths only for runtimes named `io.containerd.runc.*`, so gVisor must be configured as the
runc shim with BinaryName (AGENTOS_RUNSC_BINARY); by runtime name it cannot suspend.

runc: files only. The task is stopped (SIGTERM, then SIGKILL) and deleted; the container and
its snapshot stay, so a new task on the same root filesystem resumes it. Memory is lost: CRIU
fails `criu check` on this kernel.

A checkpoint is complete once `complete.json` (its size in bytes) is written beside it, after
containerd answered. A controller killed during the RPC does not stop containerd, the shim or
runsc, so the next suspend call adopts a stopped task's written image; an image that then
fails its restore is dropped and the agent starts afresh (files kept, memory lost).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import any_pb2

from controlplane.runtimes.base import SandboxError
from controlplane.runtimes.containerd.api import containerd_containers_pb2 as containers_pb2
from controlplane.runtimes.containerd.api import containerd_runc_options_pb2 as runc_options_pb2
from controlplane.runtimes.containerd.api import containerd_task_pb2 as task_pb2
from controlplane.runtimes.containerd.api import containerd_tasks_pb2 as tasks_pb2
from controlplane.runtimes.containerd.connection import Connection
from controlplane.runtimes.containerd.oci_spec import RUNC_OPTIONS_TYPE_URL
from controlplane.runtimes.containerd.tasks import KILL_WAIT_S, Tasks

CHECKPOINT_DIR = "checkpoint"
COMPLETE_FILE = "complete.json"
OWNER_FILE = "namespace"  # the containerd namespace whose sandbox wrote the image
RUNSC_IMAGE_FILE = "checkpoint.img"  # what runsc 20221219 writes
CHECKPOINT_OPTIONS_TYPE_URL = "containerd.runc.v1.CheckpointOptions"
CHECKPOINT_TIMEOUT_S = 120.0  # a large sandbox's memory takes a while to write


@dataclass(frozen=True)
class Suspension:
    """What a suspend kept: `memory_kept` (False: files only), `image_bytes` (the
    checkpoint image on disk, 0 without one), `image_path` ("" without one)."""

    memory_kept: bool
    image_bytes: int = 0
    image_path: str = ""


def checkpoint_dir(sandbox_dir: Path) -> Path:
    """Where the sandbox's checkpoint image lives."""
    return sandbox_dir / CHECKPOINT_DIR


def complete_image(sandbox_dir: Path) -> int | None:
    """The size in bytes of the sandbox's complete checkpoint, None if there is none."""
    try:
        return int(json.loads((checkpoint_dir(sandbox_dir) / COMPLETE_FILE).read_text())["bytes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def discard_image(sandbox_dir: Path) -> None:
    """Remove the checkpoint image (no error if there is none)."""
    shutil.rmtree(checkpoint_dir(sandbox_dir), ignore_errors=True)


def sweep_images(state_dir: Path, namespace: str, keep: set[str]) -> int:
    """Remove the checkpoint images that sandboxes of `namespace` not in `keep` left (a
    crash between a container's removal and its folder's); how many. Images of another
    namespace sharing the folder are left alone."""
    removed = 0
    if not state_dir.is_dir():
        return 0
    for folder in state_dir.iterdir():
        if folder.name in keep or not checkpoint_dir(folder).is_dir():
            continue
        try:
            owner = (checkpoint_dir(folder) / OWNER_FILE).read_text()
        except OSError:
            continue
        if owner == namespace:
            discard_image(folder)
            removed += 1
    return removed


def keeps_memory(container: containers_pb2.Container) -> bool:
    """Whether the container's runtime checkpoints memory: gVisor (runsc) by the runc shim's
    BinaryName. Raises SandboxError("SuspendUnsupported") for gVisor by runtime name, whose
    checkpoint paths containerd 1.6 ignores."""
    binary = binary_name(container)
    if "runsc" in binary:
        if not container.runtime.name.startswith("io.containerd.runc."):
            raise SandboxError(
                "SuspendUnsupported", f"runtime {container.runtime.name} cannot checkpoint"
            )
        return True
    if "gvisor" in container.runtime.name or "runsc" in container.runtime.name:
        raise SandboxError(
            "SuspendUnsupported",
            f"gVisor by runtime name ({container.runtime.name}) cannot checkpoint through "
            "containerd 1.6; configure it by BinaryName (AGENTOS_RUNSC_BINARY)",
        )
    return False


def binary_name(container: containers_pb2.Container) -> str:
    if container.runtime.options.type_url != RUNC_OPTIONS_TYPE_URL:
        return ""
    opts = runc_options_pb2.Options()
    opts.ParseFromString(container.runtime.options.value)
    return opts.binary_name


class Checkpoints:
    """Checkpoint and restore of one sandbox's task over containerd's tasks service."""

    def __init__(self, conn: Connection, tasks: Tasks, namespace: str) -> None:
        self._conn = conn
        self._tasks = tasks
        self._namespace = namespace

    async def checkpoint(
        self, sandbox_id: str, sandbox_dir: Path, cgroup: str = "", limit_bytes: int = 0
    ) -> Suspension:
        """Checkpoint the running task into `checkpoint/`; when it returns the sandbox has
        stopped and containerd reports its task stopped (`settle` then deletes it).
        `cgroup`: the spec's cgroupsPath, whose memory limit (`limit_bytes`) is lifted for
        the checkpoint and put back if it fails. Idempotent: a
        complete image with no live task is returned as it is. Raises SandboxError
        ("CheckpointFailed": e.g. runsc refuses while a TCP endpoint exists; the task then
        keeps running)."""
        image = checkpoint_dir(sandbox_dir)
        task = await self._tasks.get(sandbox_id)
        done = await asyncio.to_thread(complete_image, sandbox_dir)
        if task is not None and task.status == task_pb2.RUNNING:
            await asyncio.to_thread(_fresh_folder, image, self._namespace)
            if cgroup:
                await asyncio.to_thread(lift_memory_limit, cgroup)
            opts = runc_options_pb2.CheckpointOptions(exit=True, image_path=str(image))
            request = tasks_pb2.CheckpointTaskRequest(
                container_id=sandbox_id,
                options=any_pb2.Any(
                    type_url=CHECKPOINT_OPTIONS_TYPE_URL, value=opts.SerializeToString()
                ),
            )
            try:
                await self._conn.call(
                    self._conn.tasks.Checkpoint,
                    request,
                    f"checkpoint {sandbox_id}",
                    timeout_s=CHECKPOINT_TIMEOUT_S,
                )
            except SandboxError as err:
                await asyncio.to_thread(discard_image, sandbox_dir)
                if cgroup and limit_bytes:
                    await asyncio.to_thread(set_memory_limit, cgroup, limit_bytes)
                if err.reason == "RuntimeUnavailable":
                    raise
                raise SandboxError("CheckpointFailed", err.message[:2000]) from err
            done = await asyncio.to_thread(_mark_complete, image)
            await self._tasks.wait_exit(sandbox_id, KILL_WAIT_S)  # containerd sees it stop
        elif task is not None and done is None:
            # Stopped, not marked: the controller died while containerd checkpointed (the
            # shim and runsc finish without it): adopt a written image; none means the agent
            # exited on its own. A torn one fails its restore, and resume starts afresh.
            if await asyncio.to_thread(_has_image, image):
                done = await asyncio.to_thread(_mark_complete, image)
            else:
                await asyncio.to_thread(discard_image, sandbox_dir)
        if done is None:
            return Suspension(memory_kept=False)
        return Suspension(memory_kept=True, image_bytes=done, image_path=str(image))

    async def settle(self, sandbox_id: str) -> None:
        """Delete the checkpointed, stopped task (the shim's `runsc delete` takes as long as
        the checkpoint, so it is not on the suspend's path)."""
        task = await self._tasks.get(sandbox_id)
        if task is not None and task.status == task_pb2.STOPPED:
            await self._tasks.delete(sandbox_id)

    async def restore(
        self, sandbox_id: str, sandbox_dir: Path, rootfs: list[object], log: Path, binary: str
    ) -> None:
        """A new task restored from the complete checkpoint, started; then the image is
        removed (a restored sandbox has moved on from it). Raises SandboxError
        ("RestoreFailed")."""
        image = checkpoint_dir(sandbox_dir)
        opts = runc_options_pb2.Options(binary_name=binary, criu_image_path=str(image))
        options = any_pb2.Any(type_url=RUNC_OPTIONS_TYPE_URL, value=opts.SerializeToString())
        try:
            await self._tasks.create(sandbox_id, rootfs, log, options=options)
            await self._tasks.start(sandbox_id)
        except SandboxError as err:
            if err.reason == "RuntimeUnavailable":
                raise
            raise SandboxError("RestoreFailed", err.message) from err
        await asyncio.to_thread(discard_image, sandbox_dir)


CGROUP_ROOT = Path("/sys/fs/cgroup")


def set_memory_limit(cgroup: str, limit_bytes: int) -> None:
    """Put a lifted memory limit back (a checkpoint that failed leaves the sandbox running);
    cgroup v1's memory+swap limit stays lifted."""
    rel = cgroup.strip("/")
    for path in (
        CGROUP_ROOT / "memory" / rel / "memory.limit_in_bytes",
        CGROUP_ROOT / rel / "memory.max",
        CGROUP_ROOT / "unified" / rel / "memory.max",
    ):
        try:
            path.write_text(str(limit_bytes))
        except OSError:
            continue


def lift_memory_limit(cgroup: str) -> None:
    """Lift the memory limit of the sandbox's cgroup (`cgroupsPath` of its spec) for its
    checkpoint: gVisor's sentry serialises its state inside the sandbox's memory cgroup, and
    a 64 MiB sandbox was OOM-killed doing so (adr/0019-suspend-resume.md). The checkpointed
    task's cgroup goes with it; a restored task gets the spec's limit again. cgroup v1
    (memory.memsw.limit_in_bytes before memory.limit_in_bytes) or v2 (memory.max); no error
    where there is none."""
    rel = cgroup.strip("/")
    v1 = CGROUP_ROOT / "memory" / rel
    for path, unlimited in (
        (v1 / "memory.memsw.limit_in_bytes", "-1"),
        (v1 / "memory.limit_in_bytes", "-1"),
        (CGROUP_ROOT / rel / "memory.max", "max"),
        (CGROUP_ROOT / "unified" / rel / "memory.max", "max"),
    ):
        try:
            path.write_text(unlimited)
        except OSError:
            continue


def _fresh_folder(path: Path, namespace: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    (path / OWNER_FILE).write_text(namespace)


def _has_image(image: Path) -> bool:
    """runsc's state file is there and not empty."""
    try:
        return (image / RUNSC_IMAGE_FILE).stat().st_size > 0
    except OSError:
        return False


def _mark_complete(image: Path) -> int:
    size = sum(p.stat().st_size for p in image.rglob("*") if p.is_file())
    tmp = image / (COMPLETE_FILE + ".tmp")
    tmp.write_text(json.dumps({"bytes": size}))
    tmp.replace(image / COMPLETE_FILE)
    return size
