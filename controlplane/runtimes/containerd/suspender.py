"""Suspend and resume of one containerd sandbox, for ContainerdRuntime
(adr/0019-suspend-resume.md).

gVisor: the sandbox's TCP is quieted from the host (quiesce.py), its task checkpointed into
its folder (suspend.py); the stopped task is deleted just after, off the suspend's path (the
shim's `runsc delete` takes as long as the checkpoint). Resume puts the address back and
restores, or, without a complete image, starts a new task on the kept files. runc: the task
is stopped and deleted; resume starts a new one. Both steps are idempotent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog

from controlplane.runtimes.base import LABEL_ADDRESS, SandboxError, SandboxStatus
from controlplane.runtimes.containerd.api import containerd_containers_pb2 as containers_pb2
from controlplane.runtimes.containerd.api import containerd_task_pb2 as task_pb2
from controlplane.runtimes.containerd.connection import Connection
from controlplane.runtimes.containerd.quiesce import Quiesce
from controlplane.runtimes.containerd.snapshots import Snapshots
from controlplane.runtimes.containerd.suspend import (
    Checkpoints,
    Suspension,
    binary_name,
    complete_image,
    discard_image,
    keeps_memory,
)
from controlplane.runtimes.containerd.tasks import Tasks

if TYPE_CHECKING:
    from controlplane.runtimes.containerd.runtime import ContainerdRuntime

log = structlog.get_logger("agentos.runtime")
LOG_FILE = "output.log"  # runtime.LOG_FILE

GetContainer = Callable[[str], Awaitable[containers_pb2.Container | None]]


class Suspender:
    """Suspend and resume for `runtime`, over its containerd connection, tasks and
    snapshots."""

    def __init__(
        self,
        runtime: ContainerdRuntime,
        conn: Connection,
        get_container: GetContainer,
        tasks: Tasks,
        snapshots: Snapshots,
    ) -> None:
        self._runtime = runtime
        self._get_container = get_container
        self._tasks = tasks
        self._snapshots = snapshots
        self._checkpoints = Checkpoints(conn, tasks, runtime.namespace)
        network = runtime.network
        self._quiesce = Quiesce(network.settings.bridge if network is not None else "")
        self._settling: dict[str, asyncio.Task[None]] = {}  # sandbox id → its _settle

    async def _container(self, sandbox_id: str) -> containers_pb2.Container:
        container = await self._get_container(sandbox_id)
        if container is None:
            raise SandboxError("NotFound", f"sandbox {sandbox_id} does not exist")
        return container

    def _address(self, container: containers_pb2.Container) -> str | None:
        return container.labels.get(LABEL_ADDRESS) if self._runtime.network else None

    async def suspend(self, sandbox_id: str) -> Suspension:
        """See ContainerdRuntime.suspend."""
        container = await self._container(sandbox_id)
        folder = self._runtime.sandbox_dir(sandbox_id)
        if not keeps_memory(container):
            await self._runtime.stop(sandbox_id)
            await self._tasks.delete(sandbox_id)
            return Suspension(memory_kept=False)
        address = self._address(container)
        await self._quiesce.pause(address)  # no TCP state (quiesce.py)
        try:
            cgroup, limit_bytes = _memory(container)
            result = await self._checkpoints.checkpoint(sandbox_id, folder, cgroup, limit_bytes)
        except BaseException:
            await self._quiesce.unpause(address)
            raise
        if sandbox_id not in self._settling:
            self._settling[sandbox_id] = asyncio.create_task(self._settle(sandbox_id, address))
        return result

    async def _settle(self, sandbox_id: str, address: str | None) -> None:
        """After a checkpoint: the address may connect again, the stopped task goes."""
        try:
            await self._quiesce.unpause(address)
            await self._checkpoints.settle(sandbox_id)
        except SandboxError as err:  # resume and remove delete a leftover task too
            log.warning("settle after checkpoint", sandbox=sandbox_id, error=err.message)
        finally:
            self._settling.pop(sandbox_id, None)

    async def resume(self, sandbox_id: str) -> SandboxStatus:
        """See ContainerdRuntime.resume: from the complete checkpoint (address back first),
        else a new task on the kept files; a running sandbox is left alone (its stale image
        removed)."""
        container = await self._container(sandbox_id)
        folder = self._runtime.sandbox_dir(sandbox_id)
        if (settling := self._settling.get(sandbox_id)) is not None:
            await asyncio.wait([settling])  # the suspend's task deletion, if still going
        task = await self._tasks.get(sandbox_id)
        if task is not None and task.status == task_pb2.RUNNING:
            await asyncio.to_thread(discard_image, folder)
            return await self._runtime.status(sandbox_id)
        if await asyncio.to_thread(complete_image, folder) is None:
            await asyncio.to_thread(discard_image, folder)
            return await self._runtime.start(sandbox_id)
        if task is not None:
            await self._tasks.delete(sandbox_id)  # stopped: the checkpointed or a failed one
        address = self._address(container)
        mounts, *_ = await asyncio.gather(
            self._snapshots.mounts(sandbox_id),
            self._quiesce.unpause(address),  # a suspend interrupted before it could
            self._restore_address(sandbox_id, address),
        )
        try:
            await self._checkpoints.restore(
                sandbox_id, folder, mounts, folder / LOG_FILE, binary_name(container)
            )
        except SandboxError as err:
            if err.reason != "RestoreFailed":
                raise
            # A torn image (suspend.py): files kept, memory lost; the task starts afresh.
            await asyncio.to_thread(discard_image, folder)
            await self._tasks.delete(sandbox_id)
            return await self._runtime.start(sandbox_id)
        return await self._runtime.status(sandbox_id)

    async def _restore_address(self, sandbox_id: str, address: str | None) -> None:
        if self._runtime.network is not None and address:
            await self._runtime.network.restore_address(sandbox_id, address)

    async def close(self) -> None:
        """Wait for the task deletions still going."""
        if self._settling:
            await asyncio.gather(*self._settling.values(), return_exceptions=True)


def _memory(container: containers_pb2.Container) -> tuple[str, int]:
    """The container's `linux.cgroupsPath` and memory limit in bytes from its OCI spec ("",
    0 where none)."""
    linux = json.loads(container.spec.value or b"{}").get("linux") or {}
    limit = ((linux.get("resources") or {}).get("memory") or {}).get("limit") or 0
    return str(linux.get("cgroupsPath") or ""), int(limit)
