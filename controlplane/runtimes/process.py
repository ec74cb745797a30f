"""The `process` runtime: an agent as a plain child process. NOT a sandbox.

For a laptop without containerd. The agent runs with the control plane's user and sees the
host; nothing isolates it. Limits are not enforced. Use runc or gVisor for anything else.

State lives in `state_dir/<sandbox_id>/` (pid, exit code, log, config, heartbeat), so a
restarted controller finds processes it started before it died.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
from pathlib import Path

from controlplane.runtimes.base import (
    ProbeSpec,
    SandboxError,
    SandboxSpec,
    SandboxState,
    SandboxStatus,
)
from controlplane.runtimes.probes import heartbeat_fresh, http_get_ok


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


class ProcessRuntime:
    """Agents as child processes (unsandboxed)."""

    name = "process"

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._children: dict[str, asyncio.subprocess.Process] = {}
        self._reapers: set[asyncio.Task[None]] = set()

    def _dir(self, sandbox_id: str) -> Path:
        return self.state_dir / sandbox_id

    async def create(self, spec: SandboxSpec) -> SandboxStatus:
        folder = self._dir(spec.sandbox_id)
        if (folder / "spec.json").exists():
            return await self.status(spec.sandbox_id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(spec.config))
        argv = [*spec.command, *spec.args]
        if not argv:
            raise SandboxError("NoCommand", "the process runtime needs spec.command")
        tmp = folder / "spec.json.tmp"
        tmp.write_text(json.dumps({"argv": argv, "env": spec.env, "agent_id": spec.agent_id}))
        tmp.rename(folder / "spec.json")
        return SandboxStatus(spec.sandbox_id, SandboxState.CREATED)

    async def start(self, sandbox_id: str) -> SandboxStatus:
        current = await self.status(sandbox_id)
        if current.state is not SandboxState.CREATED:
            return current
        folder = self._dir(sandbox_id)
        spec = json.loads((folder / "spec.json").read_text())
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            **spec["env"],
            "AGENTOS_CONFIG_FILE": str(folder / "config.json"),
            "AGENTOS_HEARTBEAT_FILE": str(folder / "heartbeat"),
        }
        log = open(folder / "output.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = await asyncio.create_subprocess_exec(
                *spec["argv"],
                env=env,
                stdout=log,
                stderr=log,
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            (folder / "exit_code").write_text("127")
            raise SandboxError("StartFailed", f"cannot start {spec['argv'][0]!r}: {exc}") from exc
        finally:
            log.close()
        (folder / "pid").write_text(str(proc.pid))
        self._children[sandbox_id] = proc
        reaper = asyncio.create_task(self._reap(sandbox_id, proc))
        self._reapers.add(reaper)
        reaper.add_done_callback(self._reapers.discard)
        return SandboxStatus(sandbox_id, SandboxState.RUNNING, pid=proc.pid)

    async def _reap(self, sandbox_id: str, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        folder = self._dir(sandbox_id)
        if folder.exists():
            (folder / "exit_code").write_text(str(code))

    async def status(self, sandbox_id: str) -> SandboxStatus:
        folder = self._dir(sandbox_id)
        if not (folder / "spec.json").exists():
            return SandboxStatus(sandbox_id, SandboxState.MISSING)
        if (folder / "exit_code").exists():
            code = int((folder / "exit_code").read_text() or "-1")
            return SandboxStatus(sandbox_id, SandboxState.EXITED, exit_code=code)
        if not (folder / "pid").exists():
            return SandboxStatus(sandbox_id, SandboxState.CREATED)
        pid = int((folder / "pid").read_text())
        if _alive(pid):
            return SandboxStatus(sandbox_id, SandboxState.RUNNING, pid=pid)
        # Not our child any more (the controller restarted): the exit code is lost.
        return SandboxStatus(sandbox_id, SandboxState.EXITED, pid=pid, message="exit code lost")

    async def probe(self, sandbox_id: str, probe: ProbeSpec) -> bool:
        if probe.http_port is not None:
            return await http_get_ok(probe.http_port, probe.http_path, probe.timeout_s)
        if probe.heartbeat:
            return heartbeat_fresh(
                self._dir(sandbox_id) / "heartbeat", probe.period_s * probe.failure_threshold
            )
        if probe.exec_command:
            proc = await asyncio.create_subprocess_exec(
                *probe.exec_command,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                cwd=self._dir(sandbox_id),
            )
            try:
                return await asyncio.wait_for(proc.wait(), probe.timeout_s) == 0
            except TimeoutError:
                proc.kill()
                return False
        return True

    async def stop(self, sandbox_id: str, timeout_s: float = 10.0) -> None:
        current = await self.status(sandbox_id)
        if current.state is not SandboxState.RUNNING or current.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(current.pid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        # Not our child after a controller restart: poll /proc, there is nothing to await.
        while _alive(current.pid) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if _alive(current.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(current.pid, signal.SIGKILL)
        child = self._children.pop(sandbox_id, None)
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                await asyncio.wait_for(child.wait(), timeout_s)

    async def remove(self, sandbox_id: str) -> None:
        await self.stop(sandbox_id)
        shutil.rmtree(self._dir(sandbox_id), ignore_errors=True)

    async def logs(self, sandbox_id: str, tail_lines: int = 100) -> str:
        path = self._dir(sandbox_id) / "output.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-tail_lines:])

    async def list_sandboxes(self) -> dict[str, str]:
        result = {}
        for spec in self.state_dir.glob("*/spec.json"):
            with contextlib.suppress(ValueError, OSError):
                result[spec.parent.name] = json.loads(spec.read_text())["agent_id"]
        return result

    async def close(self) -> None:
        for reaper in list(self._reapers):
            reaper.cancel()
