"""Optional runtime capabilities: what some backends can do beyond the Runtime port.

Each is a Protocol; a backend has it by having the method (containerd: `Exec`,
`SweepsLeftovers` and `Suspends`; Kubernetes: `NodeCapacity` and `Watches`). Callers ask
`capabilities(runtime)` rather than probing for attributes, so a wrapper such as
InstrumentedRuntime can answer for the backend it wraps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from controlplane.domain.scheduling.admission import Node
from controlplane.runtimes.base import SandboxStatus


@runtime_checkable
class Exec(Protocol):
    """Runs a command inside a running sandbox."""

    async def exec(self, sandbox_id: str, command: list[str], timeout_s: float) -> int | None:
        """Run `command` as the sandbox's agent, without stdio; its exit code, or None if it
        did not finish within `timeout_s` seconds (then it is killed)."""
        ...


@runtime_checkable
class NodeCapacity(Protocol):
    """Knows the nodes sandboxes can be placed on (Kubernetes: the cluster's Nodes)."""

    async def nodes(self) -> list[Node]:
        """Schedulable nodes with what they can still offer (millicores, bytes, pods)."""
        ...


@runtime_checkable
class Watches(Protocol):
    """Tells when its sandboxes or its capacity change (Kubernetes: its informers), so the
    controller wakes instead of waiting for its next poll."""

    def subscribe(self, on_sandbox: Callable[[str], None], on_capacity: Callable[[], None]) -> None:
        """Call `on_sandbox(agent_id)` when a sandbox changes and `on_capacity()` when what
        the nodes offer may have; both are level-triggered hints."""
        ...


@runtime_checkable
class SweepsLeftovers(Protocol):
    """Holds per-sandbox resources beside the sandbox itself (containerd: network namespaces,
    address leases, firewall elements) that a crash can leave behind."""

    async def sweep(self, keep: set[str]) -> int:
        """Remove the leftovers of every sandbox whose id is not in `keep`; how many."""
        ...


@runtime_checkable
class AgentFolders(Protocol):
    """Each sandbox has a host folder it sees as `/agentos` (containerd: config.json, the
    heartbeat), which the control plane can write while the sandbox runs (warm pools' handoff,
    controllers/agents/warm_pools.py)."""

    def agent_folder(self, sandbox_id: str) -> Path:
        """The host path of the sandbox's `/agentos` folder."""
        ...


class SuspensionResult(Protocol):
    """What a suspend kept (containerd: suspend.Suspension)."""

    @property
    def memory_kept(self) -> bool: ...  # False: files only, the process starts afresh

    @property
    def image_bytes(self) -> int: ...  # the checkpoint image on disk (0: none)


@runtime_checkable
class Suspends(Protocol):
    """Suspends a sandbox so it holds no process, and resumes it (adr/0019-suspend-resume.md):
    gVisor with its memory, runc with its files only."""

    async def suspend(self, sandbox_id: str) -> SuspensionResult:
        """Checkpoint or stop the sandbox; idempotent. Raises SandboxError
        (SuspendUnsupported, CheckpointFailed: it keeps running)."""
        ...

    async def resume(self, sandbox_id: str) -> SandboxStatus:
        """Run the suspended sandbox again; idempotent. Raises SandboxError (RestoreFailed,
        StartFailed, NotFound)."""
        ...


@dataclass(frozen=True)
class Capabilities:
    """The optional capabilities of one backend; None where it lacks one."""

    exec: Exec | None = None
    node_capacity: NodeCapacity | None = None
    watches: Watches | None = None
    sweeps: SweepsLeftovers | None = None
    folders: AgentFolders | None = None
    suspends: Suspends | None = None


@runtime_checkable
class Wrapper(Protocol):
    """A runtime that wraps a backend (a decorator) and answers for its capabilities."""

    @property
    def capabilities(self) -> Capabilities: ...


def capabilities(runtime: object) -> Capabilities:
    """What `runtime` can do beyond the Runtime port (a wrapper's: its backend's)."""
    if isinstance(runtime, Wrapper):
        return runtime.capabilities
    return Capabilities(
        exec=runtime if isinstance(runtime, Exec) else None,
        node_capacity=runtime if isinstance(runtime, NodeCapacity) else None,
        watches=runtime if isinstance(runtime, Watches) else None,
        sweeps=runtime if isinstance(runtime, SweepsLeftovers) else None,
        folders=runtime if isinstance(runtime, AgentFolders) else None,
        suspends=runtime if isinstance(runtime, Suspends) else None,
    )
