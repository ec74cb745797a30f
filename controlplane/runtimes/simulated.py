"""A simulated runtime with configurable latency — for scale benchmarks ONLY
(adr/0004-lifecycle-controller-and-runtimes.md).

Like KWOK's fake nodes: sandboxes are entries in memory that become running after
`start_latency_s` and answer probes. It is never the default and never stands in for a real
runtime in a test that claims to test one.
"""

from __future__ import annotations

import asyncio

from controlplane.runtimes.base import ProbeSpec, SandboxSpec, SandboxState, SandboxStatus


class SimulatedRuntime:
    name = "simulated"

    def __init__(self, start_latency_s: float = 0.0) -> None:
        self.start_latency_s = start_latency_s
        self._sandboxes: dict[str, tuple[str, SandboxState]] = {}

    async def create(self, spec: SandboxSpec) -> SandboxStatus:
        self._sandboxes.setdefault(spec.sandbox_id, (spec.agent_id, SandboxState.CREATED))
        return await self.status(spec.sandbox_id)

    async def start(self, sandbox_id: str) -> SandboxStatus:
        if self.start_latency_s:
            await asyncio.sleep(self.start_latency_s)
        agent_id, _ = self._sandboxes[sandbox_id]
        self._sandboxes[sandbox_id] = (agent_id, SandboxState.RUNNING)
        return await self.status(sandbox_id)

    async def status(self, sandbox_id: str) -> SandboxStatus:
        entry = self._sandboxes.get(sandbox_id)
        return SandboxStatus(sandbox_id, entry[1] if entry else SandboxState.MISSING)

    async def probe(self, sandbox_id: str, probe: ProbeSpec) -> bool:
        entry = self._sandboxes.get(sandbox_id)
        return entry is not None and entry[1] is SandboxState.RUNNING

    async def stop(self, sandbox_id: str, timeout_s: float = 10.0) -> None:
        if sandbox_id in self._sandboxes:
            agent_id, _ = self._sandboxes[sandbox_id]
            self._sandboxes[sandbox_id] = (agent_id, SandboxState.EXITED)

    async def remove(self, sandbox_id: str) -> None:
        self._sandboxes.pop(sandbox_id, None)

    async def logs(self, sandbox_id: str, tail_lines: int = 100) -> str:
        return ""

    async def list_sandboxes(self) -> dict[str, str]:
        return {sid: agent for sid, (agent, _) in self._sandboxes.items()}

    async def close(self) -> None:
        return None
