"""The scheduling pass: admit pending agents against quota and capacity.

One pass reads what waits and what is held (data/repositories/agent_reads.py), asks the
pure admission rule (domain/scheduling/admission.py) for decisions, and writes them: admitted
agents move Created → Scheduled with their node, the others get a `Scheduled=False
Unschedulable` condition saying why. Agents still in their restart backoff wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta

from controlplane.controllers.agents.config import ControllerConfig
from controlplane.controllers.agents.store import AgentStore
from controlplane.data.repositories.agents import Reservation
from controlplane.domain.agents.lifecycle import Phase, restart_backoff_s
from controlplane.domain.events.envelope import parse_rfc3339, utcnow
from controlplane.domain.records import AgentRecord
from controlplane.domain.scheduling.admission import Decisions, Node, Pending, TenantUsage, schedule
from controlplane.service import agents as svc

HELD = (Phase.SCHEDULED, Phase.STARTING, Phase.READY, Phase.SUSPENDED)
"""Phases whose agents hold their reservation on the tenant's quota and the node."""


def restart_delay(record: AgentRecord, now: datetime, config: ControllerConfig) -> float:
    """Seconds until a restarted agent may be scheduled again (<= 0: now): its restart
    backoff (domain.agents.lifecycle.restart_backoff_s) counted from `status.failedAt`."""
    failed_at = parse_rfc3339(record.status.failedAt) if record.status.failedAt else None
    if record.status.restartCount == 0 or failed_at is None:
        return 0.0
    backoff = restart_backoff_s(
        record.status.restartCount - 1,
        config.restart_backoff_base_s,
        config.restart_backoff_max_s,
    )
    return (failed_at + timedelta(seconds=backoff) - now).total_seconds()


class Scheduler:
    """`schedule_pass()`; `enqueue(agent_id)` is called for every agent it admitted."""

    def __init__(
        self, store: AgentStore, config: ControllerConfig, enqueue: Callable[[str], None]
    ) -> None:
        self._store = store
        self.config = config
        self._enqueue = enqueue

    async def schedule_pass(self) -> None:
        """One pass (see the module docstring). Callers serialise passes (a Trigger)."""
        inputs = await self._store.reads.admission(HELD)
        nodes = await self._nodes()
        usage = _usage(inputs.quotas, inputs.held, nodes)
        now = utcnow()
        pending = [
            Pending(
                a.id,
                a.tenant,
                a.spec.priority,
                a.created_at,
                a.spec.resources.request_cpu_millis(),
                a.spec.resources.request_memory_bytes(),
            )
            for a in inputs.pending
            if restart_delay(a, now, self.config) <= 0
        ]
        decisions = schedule(pending, nodes, usage)
        changes = _changes(decisions, {a.id: a for a in inputs.pending})
        # A change that lost a race (stale resourceVersion) is looked at again by its reconcile.
        await asyncio.gather(*(self._store.write(c) for c in changes), return_exceptions=True)
        for agent_id in decisions.admitted:
            self._enqueue(agent_id)

    async def _nodes(self) -> list[Node]:
        if self.config.node_source is not None:
            return await self.config.node_source()
        return [Node(n.name, n.cpu_millis, n.memory_bytes, n.max_agents) for n in self.config.nodes]


def _usage(
    quotas: Mapping[str, Mapping[str, int] | None], held: Sequence[Reservation], nodes: list[Node]
) -> dict[str, TenantUsage]:
    """Each tenant's quota with what it holds reserved; reserves on `nodes` as well."""
    by_node = {n.name: n for n in nodes}
    usage = {
        name: TenantUsage(
            (quota or {}).get("agents"),
            (quota or {}).get("cpu_millis"),
            (quota or {}).get("memory_bytes"),
        )
        for name, quota in quotas.items()
    }
    for r in held:
        usage[r.tenant].reserve(r.cpu_millis, r.memory_bytes, r.agents)
        if r.node in by_node:
            by_node[r.node].reserve(r.cpu_millis, r.memory_bytes, r.agents)
    return usage


def _changes(decisions: Decisions, records: dict[str, AgentRecord]) -> list[svc.StatusChange]:
    """The writes of `decisions`; an unchanged Unschedulable condition is not rewritten."""
    changes = []
    for agent_id, node in decisions.admitted.items():
        record = records[agent_id]
        placed = svc.condition(
            "Scheduled", "True", "Scheduled", f"placed on {node}", record.generation
        )
        changes.append(
            svc.StatusChange(
                record,
                {"node": node, "conditions": svc.merge_condition(record.status, placed)},
                Phase.SCHEDULED,
                "Scheduled",
                f"placed on {node}",
            )
        )
    for agent_id, message in decisions.unschedulable.items():
        record = records[agent_id]
        current = next((c for c in record.status.conditions if c["type"] == "Scheduled"), None)
        if current and (current["status"], current["reason"], current["message"]) == (
            "False",
            "Unschedulable",
            message,
        ):
            continue
        new = svc.condition("Scheduled", "False", "Unschedulable", message, record.generation)
        changes.append(
            svc.StatusChange(
                record,
                {
                    "reason": "Unschedulable",
                    "message": message,
                    "conditions": svc.merge_condition(record.status, new),
                },
            )
        )
    return changes
