"""The sandbox runtime port (adr/0004-lifecycle-controller-and-runtimes.md): one interface, several
backends.

A runtime creates, starts, inspects, stops and removes *sandboxes*; it knows nothing of
phases or the database. Every operation is idempotent on `sandbox_id`, so a controller that
restarts after a crash can repeat any step safely. Sandboxes carry the labels they were
created with, so the controller can list them and remove leaks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

LABEL_MANAGED = "agentos.io/managed"
LABEL_AGENT_ID = "agentos.io/agent-id"
LABEL_TENANT = "agentos.io/tenant"
LABEL_ADDRESS = "agentos.io/address"  # the sandbox's address on the sandbox bridge
LABEL_WARM_POOL = "agentos.io/warm-pool"  # a warm pool's sandbox: its pool key


class SandboxState(StrEnum):
    CREATED = "Created"  # exists, not started
    RUNNING = "Running"
    EXITED = "Exited"
    MISSING = "Missing"  # no such sandbox


@dataclass(frozen=True)
class ProbeSpec:
    """Readiness check, from the Agent's `spec.readiness`: exactly one of the actions."""

    exec_command: list[str] | None = None
    http_port: int | None = None
    http_path: str = "/healthz"
    heartbeat: bool = False
    period_s: float = 1.0
    timeout_s: float = 1.0
    failure_threshold: int = 3


@dataclass(frozen=True)
class SandboxSpec:
    """Everything a runtime needs to run one agent.

    `cpu_millis` / `memory_bytes` are limits (0: none); `request_*` what the scheduler
    reserved. `config` is written as JSON to a file whose path the agent finds in
    `$AGENTOS_CONFIG_FILE`; `$AGENTOS_HEARTBEAT_FILE` names the file a heartbeat agent
    touches. `node` is where the scheduler placed it (runtimes with several nodes bind there);
    `annotations` are the agent's (e.g. the uid of the Agent custom resource it mirrors).
    """

    sandbox_id: str
    agent_id: str
    tenant: str
    name: str
    image: str
    runtime_class: str  # runc | gvisor | process
    command: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cpu_millis: int = 0
    memory_bytes: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    probe: ProbeSpec | None = None
    request_cpu_millis: int = 0
    request_memory_bytes: int = 0
    node: str = ""
    annotations: dict[str, str] = field(default_factory=dict)
    warm_pool: str = ""  # the pool key of a warm sandbox (controllers/agents/warm_pools.py)

    def labels(self) -> dict[str, str]:
        labels = {LABEL_MANAGED: "true", LABEL_AGENT_ID: self.agent_id, LABEL_TENANT: self.tenant}
        return labels | ({LABEL_WARM_POOL: self.warm_pool} if self.warm_pool else {})


@dataclass(frozen=True)
class SandboxStatus:
    sandbox_id: str
    state: SandboxState
    exit_code: int | None = None
    pid: int | None = None
    message: str = ""


class SandboxError(Exception):
    """A runtime operation failed; `reason` is CamelCase for conditions and events."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Runtime(Protocol):
    """A sandbox backend. All methods are idempotent on `sandbox_id`."""

    name: str

    async def create(self, spec: SandboxSpec) -> SandboxStatus:
        """Create (not start) the sandbox; an existing one is returned as it is."""
        ...

    async def start(self, sandbox_id: str) -> SandboxStatus:
        """Start a created sandbox; a running one is left alone."""
        ...

    async def status(self, sandbox_id: str) -> SandboxStatus:
        """The sandbox's state (MISSING if it does not exist)."""
        ...

    async def probe(self, sandbox_id: str, probe: ProbeSpec) -> bool:
        """One readiness check: True if the agent itself answers."""
        ...

    async def stop(self, sandbox_id: str, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout_s`. No error if not running or missing."""
        ...

    async def remove(self, sandbox_id: str) -> None:
        """Stop if needed and delete every trace of the sandbox. No error if missing."""
        ...

    async def logs(self, sandbox_id: str, tail_lines: int = 100) -> str:
        """The last `tail_lines` lines of the sandbox's output ("" if none)."""
        ...

    async def list_sandboxes(self) -> dict[str, str]:
        """Every sandbox this runtime manages: sandbox_id → agent_id (for leak removal)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
