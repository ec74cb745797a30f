"""Admission and placement (architecture/state-machines.md "Scheduled"): pure, given a snapshot of
the world.

Pending agents are considered in priority order (higher first); among equal priorities the
tenant with the fewest admitted agents goes first, so no tenant starves another (a simple
form of dominant-resource fairness on the agent count), then the oldest agent. An agent is
admitted when its tenant's quota (agents, cpu, memory) and some node's free capacity both
hold its requests; among nodes that fit, the one with the most free memory wins (spread).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class Node:
    """A place sandboxes run; capacities in millicores and bytes."""

    name: str
    cpu_millis: int
    memory_bytes: int
    max_agents: int = 1_000_000
    used_cpu_millis: int = 0
    used_memory_bytes: int = 0
    agents: int = 0

    def fits(self, cpu: int, memory: int) -> bool:
        return (
            self.used_cpu_millis + cpu <= self.cpu_millis
            and self.used_memory_bytes + memory <= self.memory_bytes
            and self.agents < self.max_agents
        )

    def reserve(self, cpu: int, memory: int, agents: int = 1) -> None:
        """Take `cpu` millicores and `memory` bytes for `agents` agents (all at once)."""
        self.used_cpu_millis += cpu
        self.used_memory_bytes += memory
        self.agents += agents


@dataclass
class TenantUsage:
    """A tenant's quota (None: unlimited) and what its admitted agents use."""

    agents_quota: int | None = None
    cpu_quota_millis: int | None = None
    memory_quota_bytes: int | None = None
    agents: int = 0
    cpu_millis: int = 0
    memory_bytes: int = 0

    def violation(self, cpu: int, memory: int) -> str | None:
        if self.agents_quota is not None and self.agents + 1 > self.agents_quota:
            return f"tenant quota of {self.agents_quota} agents is used up"
        if self.cpu_quota_millis is not None and self.cpu_millis + cpu > self.cpu_quota_millis:
            return f"tenant cpu quota {self.cpu_quota_millis}m would be exceeded"
        if (
            self.memory_quota_bytes is not None
            and self.memory_bytes + memory > self.memory_quota_bytes
        ):
            return f"tenant memory quota {self.memory_quota_bytes} bytes would be exceeded"
        return None

    def reserve(self, cpu: int, memory: int, agents: int = 1) -> None:
        """Count `agents` admitted agents using `cpu` millicores and `memory` bytes in all."""
        self.agents += agents
        self.cpu_millis += cpu
        self.memory_bytes += memory


@dataclass(frozen=True)
class Pending:
    agent_id: str
    tenant: str
    priority: int
    created_at: datetime
    cpu_millis: int
    memory_bytes: int


@dataclass
class Decisions:
    admitted: dict[str, str] = field(default_factory=dict)  # agent id → node
    unschedulable: dict[str, str] = field(default_factory=dict)  # agent id → message


def schedule(
    pending: list[Pending], nodes: list[Node], tenants: dict[str, TenantUsage]
) -> Decisions:
    """Decide placements for `pending`; mutates the usage in `nodes` and `tenants`.

    O(n log n) in the pending agents: per priority level, each tenant's agents wait in
    creation order and a heap keyed by (admitted agents, oldest waiting) picks the next
    tenant, which is the order of the module docstring.
    """
    decisions = Decisions()
    by_priority: dict[int, dict[str, list[Pending]]] = {}
    for p in pending:
        by_priority.setdefault(p.priority, {}).setdefault(p.tenant, []).append(p)
    for priority in sorted(by_priority, reverse=True):
        queues = by_priority[priority]
        heap: list[tuple[int, datetime, str]] = []
        for tenant, waiting in queues.items():
            waiting.sort(key=lambda p: p.created_at, reverse=True)  # oldest last, for pop()
            heapq.heappush(
                heap,
                (tenants.setdefault(tenant, TenantUsage()).agents, waiting[-1].created_at, tenant),
            )
        while heap:
            _, _, tenant = heapq.heappop(heap)
            waiting = queues[tenant]
            p = waiting.pop()
            _place(p, nodes, tenants[tenant], decisions)
            if waiting:
                heapq.heappush(heap, (tenants[tenant].agents, waiting[-1].created_at, tenant))
    return decisions


def _place(p: Pending, nodes: list[Node], usage: TenantUsage, decisions: Decisions) -> None:
    problem = usage.violation(p.cpu_millis, p.memory_bytes)
    if problem:
        decisions.unschedulable[p.agent_id] = problem
        return
    fitting = [n for n in nodes if n.fits(p.cpu_millis, p.memory_bytes)]
    if not fitting:
        decisions.unschedulable[p.agent_id] = (
            f"no node has {p.cpu_millis}m cpu and {p.memory_bytes} bytes free"
        )
        return
    node = max(fitting, key=lambda n: (n.memory_bytes - n.used_memory_bytes, n.name))
    node.reserve(p.cpu_millis, p.memory_bytes)
    usage.reserve(p.cpu_millis, p.memory_bytes)
    decisions.admitted[p.agent_id] = node.name
