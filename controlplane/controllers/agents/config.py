"""The agent controller's settings (built by controlplane/bootstrap.py from Settings)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from controlplane.domain.agents.warm_pools import WarmPool
from controlplane.domain.scheduling.admission import Node


@dataclass
class ControllerConfig:
    """Times in seconds."""

    # Workers reconcile concurrently; their reads and writes are batched (store.py).
    workers: int = 16
    resync_s: float = 30.0
    change_poll_s: float = 0.5
    starting_timeout_s: float = 120.0
    unschedulable_retry_s: float = 5.0
    restart_backoff_base_s: float = 1.0
    restart_backoff_max_s: float = 60.0
    # Ready requires every earlier event of the agent to be Published
    # (architecture/state-machines.md §3). Off only when no relay runs (embedded mode):
    # there, events stay in the outbox by design.
    require_published: bool = True
    nodes: list[Node] = field(default_factory=list)
    # Where the nodes come from when they are not fixed (the Kubernetes runtime's Nodes);
    # called once per scheduling pass.
    node_source: Callable[[], Awaitable[list[Node]]] | None = None
    # The agent gateway as sandboxes reach it: each new sandbox gets AGENTOS_GATEWAY_URL and
    # a credential of its own (AGENTOS_AGENT_TOKEN). None: sandboxes get neither.
    gateway_url: str | None = None
    # The egress proxy as sandboxes reach it (`http://host:port`): with the gateway, each new
    # sandbox gets HTTP(S)_PROXY with its credential in it and NO_PROXY = the gateway's host.
    egress_proxy_url: str | None = None
    # Sandboxes started ahead that agents claim (architecture/warm-pools.md).
    warm_pools: list[WarmPool] = field(default_factory=list)
