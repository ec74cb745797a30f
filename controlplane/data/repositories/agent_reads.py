"""Reads of agents outside a UnitOfWork: each call opens a connection of its own.

The controller's reads (controlplane/controllers/agents/): the batched reads of its workers,
the polls for foreign writes, the inputs of a scheduling pass, the owned set of the leak
sweep and the outbox count Ready waits for. None writes; the controller writes through a
UnitOfWork.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.data.repositories.agents import AgentRepository, Reservation
from controlplane.data.tables import outbox, tenants
from controlplane.domain.agents.lifecycle import Phase
from controlplane.domain.events.envelope import OutboxState
from controlplane.domain.records import AgentRecord

Database: TypeAlias = AsyncEngine
"""How a process reaches its database (an AsyncEngine, see controlplane/data/engine.py)."""


@dataclass(frozen=True)
class AdmissionInputs:
    """What one scheduling pass reads, on one connection.

    `pending`: agents waiting for admission; `held`: what admitted agents reserve, per
    tenant and node; `quotas`: tenant name → its quota ({"agents", "cpu_millis",
    "memory_bytes"}, any absent) or None, for every tenant named in `pending` or `held`.
    """

    pending: Sequence[AgentRecord]
    held: Sequence[Reservation]
    quotas: Mapping[str, Mapping[str, int] | None]


class AgentReads:
    """`AgentReads(engine)`: the controller's reads (see the module docstring)."""

    def __init__(self, engine: Database) -> None:
        self._engine = engine

    async def by_ids(self, agent_ids: Iterable[str]) -> dict[str, AgentRecord]:
        """id → record of each of `agent_ids` that exists."""
        async with self._engine.connect() as conn:
            return await AgentRepository(conn).by_ids(agent_ids)

    async def resource_versions(self) -> dict[str, int]:
        """Every agent's id → resourceVersion."""
        async with self._engine.connect() as conn:
            return await AgentRepository(conn).resource_versions()

    async def sandbox_ids(self) -> set[str]:
        """Every sandbox id an agent records."""
        async with self._engine.connect() as conn:
            return await AgentRepository(conn).sandbox_ids()

    async def admission(self, held_phases: Iterable[Phase]) -> AdmissionInputs:
        """The pending agents, what agents in `held_phases` reserve, and the tenants' quotas.

        Reads pending agents in full but only sums of the admitted ones (derived columns),
        so it costs what is pending, not every agent there is."""
        async with self._engine.connect() as conn:
            repo = AgentRepository(conn)
            pending = await repo.pending()
            held = await repo.reservations(held_phases)
            names = {a.tenant for a in pending} | {r.tenant for r in held}
            rows = await conn.execute(
                select(tenants.c.name, tenants.c.quota).where(tenants.c.name.in_(names))
            )
            quotas: dict[str, Any] = {name: quota for name, quota in rows}
        return AdmissionInputs(pending, held, {n: quotas.get(n) for n in names})

    async def unpublished_events(
        self, aggregate_type: str, aggregate_ids: Sequence[str]
    ) -> dict[str, int]:
        """How many events of each aggregate are not yet Published; absent ids have none."""
        query = (
            select(outbox.c.aggregate_id, func.count())
            .where(
                outbox.c.aggregate_type == aggregate_type,
                outbox.c.aggregate_id.in_(aggregate_ids),
                outbox.c.state == OutboxState.OUTBOX_WRITTEN,
            )
            .group_by(outbox.c.aggregate_id)
        )
        async with self._engine.connect() as conn:
            return {i: int(n) for i, n in await conn.execute(query)}
