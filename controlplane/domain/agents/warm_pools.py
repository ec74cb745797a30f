"""Warm pools: which agents a pool of started, identity-less sandboxes can serve
(architecture/warm-pools.md, adr/0020-warm-pools-late-binding.md).

A pool is configured per runtime class, image and command (`AGENTOS_WARM_POOLS`). Its
sandboxes run the SDK's bootstrap (`python3 -m agentos_sdk.warm`) until an agent claims one
and hands it its environment, credential and config (late binding). An agent can claim a
sandbox only if everything fixed when the sandbox was created is what it would have asked
for: runtime class, image, command and args, and the CPU and memory limits. Everything else
(env, config, credential, readiness) is bound at the claim.
"""

from __future__ import annotations

import hashlib
import json

from pydantic import Field

from controlplane.domain.agents.model import AgentSpec, ResourceList, Strict
from controlplane.domain.quantity import cpu_millis, memory_bytes

# A warm sandbox's id: `warm-<pool key>-<8 hex>`. The prefix and key tell the leak sweep and a
# restarted controller whose sandbox it is without reading any label.
SANDBOX_PREFIX = "warm-"
BOOTSTRAP_COMMAND = ("python3", "-m", "agentos_sdk.warm")


class WarmPool(Strict):
    """One pool: `size` started sandboxes of `runtimeClass` on `image`, for agents whose
    `command` + `args` and limits are these. `resources` are limits (as an agent's
    `spec.resources.limits`, a request defaulting to them); none: no limit."""

    runtimeClass: str = Field(pattern=r"^(runc|gvisor)$")
    image: str = Field(min_length=1)
    command: list[str] = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    size: int = Field(ge=0, le=1000)
    resources: ResourceList = Field(default_factory=ResourceList)

    def limits(self) -> tuple[int, int]:
        """(cpu millicores, memory bytes); 0 for none."""
        cpu, mem = self.resources.cpu, self.resources.memory
        return (cpu_millis(cpu) if cpu else 0, memory_bytes(mem) if mem else 0)

    def shape(self) -> tuple[str, str, tuple[str, ...], tuple[str, ...], int, int]:
        """What a sandbox of this pool fixed at its creation (see `agent_shape`)."""
        command, args = tuple(self.command), tuple(self.args)
        return (self.runtimeClass, self.image, command, args, *self.limits())

    def key(self) -> str:
        """10 hex digits naming the pool's shape (its size is not part of it: resizing a
        pool keeps its sandboxes)."""
        raw = json.dumps(self.shape()).encode()
        return hashlib.sha256(raw).hexdigest()[:10]


def agent_shape(spec: AgentSpec) -> tuple[str, str, tuple[str, ...], tuple[str, ...], int, int]:
    """The same tuple for an agent: its limits are `limits`, else `requests` (as the sandbox
    it would get; controllers/agents/sandbox.py)."""
    limits, requests = spec.resources.limits, spec.resources.requests
    cpu = limits.cpu or requests.cpu
    mem = limits.memory or requests.memory
    return (
        spec.runtime.class_,
        spec.image,
        tuple(spec.command),
        tuple(spec.args),
        cpu_millis(cpu) if cpu else 0,
        memory_bytes(mem) if mem else 0,
    )


def matching_pool(pools: list[WarmPool], spec: AgentSpec) -> WarmPool | None:
    """The pool whose sandboxes can serve an agent of `spec`, or None. An agent without a
    `command` matches none (the pool's argv must be the agent's)."""
    if not spec.command:
        return None
    shape = agent_shape(spec)
    return next((p for p in pools if p.shape() == shape), None)


def sandbox_pool_key(sandbox_id: str) -> str | None:
    """The pool key in a warm sandbox's id, None for any other sandbox."""
    if not sandbox_id.startswith(SANDBOX_PREFIX):
        return None
    key, _, rest = sandbox_id[len(SANDBOX_PREFIX) :].partition("-")
    if len(key) != 10 or not rest or any(c not in "0123456789abcdef" for c in key):
        return None
    return key
