"""Tasks: the running process tree of a sandbox, and commands exec'd beside it.

A container has at most one task. Its stdout and stderr are appended to one file by
containerd's runc shim (`file://` IO). A task exits with containerd's exit status: the
process's code, or 128+signal when a signal killed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from google.protobuf import any_pb2

from controlplane.runtimes.base import SandboxError
from controlplane.runtimes.containerd.api import containerd_task_pb2 as task_pb2
from controlplane.runtimes.containerd.api import containerd_tasks_pb2 as tasks_pb2
from controlplane.runtimes.containerd.connection import (
    NOT_FOUND,
    Connection,
    containerd_error,
    timed_out,
)
from controlplane.runtimes.containerd.oci_spec import PROCESS_TYPE_URL

KILL_WAIT_S = 10.0  # how long a kill waits for SIGKILL to take effect


class Tasks:
    """containerd's tasks service over `conn`, one container id (= sandbox id) at a time."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def get(self, sandbox_id: str, exec_id: str = "") -> task_pb2.Process | None:
        """The task (or exec'd process), None if there is none."""
        resp = await self._conn.call(
            self._conn.tasks.Get,
            tasks_pb2.GetRequest(container_id=sandbox_id, exec_id=exec_id),
            f"get task {sandbox_id}",
            tolerate=NOT_FOUND,
        )
        if resp is None:
            return None
        process: task_pb2.Process = resp.process
        return process

    async def create(
        self, sandbox_id: str, rootfs: list[Any], log: Path, options: any_pb2.Any | None = None
    ) -> None:
        """tasks.Create on the `rootfs` mounts, output appended to `log` (`options`: the
        shim's, e.g. a checkpoint to restore); an existing task is left alone. Raises
        SandboxError("CreateFailed") when the runtime refuses it."""
        await asyncio.to_thread(log.parent.mkdir, parents=True, exist_ok=True)
        # The runc shim's file:// IO: it creates the file and copies stdout *and* stderr
        # into the one path given as stdout.
        uri = "file://" + urllib.parse.quote(str(log))
        try:
            await self._conn.tasks.Create(
                tasks_pb2.CreateTaskRequest(
                    container_id=sandbox_id, rootfs=rootfs, stdout=uri, stderr=uri, options=options
                ),
                metadata=self._conn.metadata(),
                timeout=self._conn.rpc_timeout_s,
            )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.UNAVAILABLE:
                raise containerd_error(err, f"create task {sandbox_id}") from err
            if err.code() != grpc.StatusCode.ALREADY_EXISTS:
                # The shim ran `runc create`: a missing binary, a bad mount, a cgroup error...
                raise SandboxError(
                    "CreateFailed", f"create task {sandbox_id}: {err.details()}"
                ) from err

    async def start(self, sandbox_id: str) -> None:
        """Start the created task. Raises SandboxError("StartFailed"), unless a concurrent
        start won (the task runs)."""
        try:
            await self._conn.tasks.Start(
                tasks_pb2.StartRequest(container_id=sandbox_id),
                metadata=self._conn.metadata(),
                timeout=self._conn.rpc_timeout_s,
            )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.UNAVAILABLE:
                raise containerd_error(err, f"start {sandbox_id}") from err
            current = await self.get(sandbox_id)
            if current is not None and current.status == task_pb2.RUNNING:
                return  # a concurrent start won
            raise SandboxError("StartFailed", f"start {sandbox_id}: {err.details()}") from err

    async def kill(self, sandbox_id: str, sig: int) -> None:
        """`sig` to every process of the task; no error if there is none or it is not
        running."""
        await self._conn.call(
            self._conn.tasks.Kill,
            tasks_pb2.KillRequest(container_id=sandbox_id, signal=sig, all=True),
            f"kill {sandbox_id}",
            # NotFound: no task or the process is gone; FailedPrecondition: not running.
            tolerate=(grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION),
        )

    async def wait_exit(self, sandbox_id: str, timeout_s: float) -> bool:
        """True once the task has exited (or is gone) within `timeout_s`."""
        try:
            await self._conn.tasks.Wait(
                tasks_pb2.WaitRequest(container_id=sandbox_id),
                metadata=self._conn.metadata(),
                timeout=max(timeout_s, 0.001),
            )
        except grpc.aio.AioRpcError as err:
            if timed_out(err):
                return False
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise containerd_error(err, f"wait for {sandbox_id}") from err
        return True

    async def delete(self, sandbox_id: str) -> None:
        """Delete the (stopped or created) task; no error if there is none."""
        await self._conn.call(
            self._conn.tasks.Delete,
            tasks_pb2.DeleteTaskRequest(container_id=sandbox_id),
            f"delete task {sandbox_id}",
            tolerate=NOT_FOUND,
        )

    async def exec(self, sandbox_id: str, process: dict[str, Any], timeout_s: float) -> int | None:
        """Run the OCI `process` in the running task, without stdio; its exit code, or None
        if it did not finish within `timeout_s` (then it is killed). Raises SandboxError
        (RuntimeUnavailable, ContainerdError) when containerd refuses it."""
        exec_id = f"exec-{uuid.uuid4().hex[:12]}"
        spec = any_pb2.Any(type_url=PROCESS_TYPE_URL, value=json.dumps(process).encode())
        await self._conn.call(
            self._conn.tasks.Exec,
            tasks_pb2.ExecProcessRequest(container_id=sandbox_id, exec_id=exec_id, spec=spec),
            f"exec in {sandbox_id}",
        )
        md = self._conn.metadata()
        try:
            await self._conn.tasks.Start(
                tasks_pb2.StartRequest(container_id=sandbox_id, exec_id=exec_id),
                metadata=md,
                timeout=self._conn.rpc_timeout_s,
            )
            try:
                waited = await self._conn.tasks.Wait(
                    tasks_pb2.WaitRequest(container_id=sandbox_id, exec_id=exec_id),
                    metadata=md,
                    timeout=timeout_s,
                )
                return int(waited.exit_status)
            except grpc.aio.AioRpcError as err:
                if not timed_out(err):
                    raise
            await self._kill_exec(sandbox_id, exec_id)
            return None
        except grpc.aio.AioRpcError as err:
            raise containerd_error(err, f"exec in {sandbox_id}") from err
        finally:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self._conn.tasks.DeleteProcess(
                    tasks_pb2.DeleteProcessRequest(container_id=sandbox_id, exec_id=exec_id),
                    metadata=md,
                    timeout=self._conn.rpc_timeout_s,
                )

    async def _kill_exec(self, sandbox_id: str, exec_id: str) -> None:
        """SIGKILL to an exec'd process and a short wait for it; errors ignored."""
        md = self._conn.metadata()
        with contextlib.suppress(grpc.aio.AioRpcError):
            await self._conn.tasks.Kill(
                tasks_pb2.KillRequest(
                    container_id=sandbox_id, exec_id=exec_id, signal=signal.SIGKILL
                ),
                metadata=md,
                timeout=self._conn.rpc_timeout_s,
            )
            await self._conn.tasks.Wait(
                tasks_pb2.WaitRequest(container_id=sandbox_id, exec_id=exec_id),
                metadata=md,
                timeout=KILL_WAIT_S,
            )
