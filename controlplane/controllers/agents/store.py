"""The agent controller's reads and writes, batched across its workers.

Workers each read one agent and write one change; a `Batcher` (controllers/machinery/
batching.py) turns the calls made at once into one SELECT, one transaction, one outbox count.
"""

from __future__ import annotations

from controlplane.controllers.machinery.batching import Batcher
from controlplane.data.repositories.agent_reads import AgentReads, Database
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.agents.lifecycle import IllegalTransition
from controlplane.domain.errors import Conflict
from controlplane.domain.events.registry import SchemaRegistry
from controlplane.domain.records import AgentRecord
from controlplane.service import agents as svc
from controlplane.service import run_execution


class AgentStore:
    """`read`, `write`, `unpublished` batched; `reads` and `uow()` for the rest."""

    def __init__(self, engine: Database, registry: SchemaRegistry) -> None:
        self._engine = engine
        self._registry = registry
        self.reads = AgentReads(engine)
        self._reads: Batcher[str, AgentRecord | None] = Batcher(self._read_agents)
        self._writes: Batcher[svc.StatusChange, AgentRecord] = Batcher(self._write_changes)
        self._unpublished: Batcher[str, int] = Batcher(self._count_unpublished)
        self._credentials: Batcher[tuple[AgentRecord, str], str] = Batcher(self._issue)

    def uow(self) -> UnitOfWork:
        """A UnitOfWork of the controller (principal `system:controller`)."""
        return UnitOfWork(self._engine, self._registry, principal="system:controller")

    async def read(self, agent_id: str) -> AgentRecord | None:
        """The agent as committed now; None when it is gone."""
        return await self._reads.submit(agent_id)

    async def write(self, change: svc.StatusChange) -> AgentRecord:
        """Apply one status change (service.agents.change_statuses) in a shared transaction.
        Raises Conflict (stale resourceVersion), IllegalTransition."""
        return await self._writes.submit(change)

    async def unpublished(self, agent_id: str) -> int:
        """How many of the agent's events are not yet Published."""
        return await self._unpublished.submit(agent_id)

    async def issue_credential(self, record: AgentRecord, sandbox_id: str) -> str:
        """A new sandbox credential for the agent's sandbox (service.run_execution)."""
        return await self._credentials.submit((record, sandbox_id))

    async def revoke_credentials(self, sandbox_id: str) -> None:
        """Revoke the credentials of a sandbox that was removed (not batched: a rare path)."""
        async with self.uow() as uow:
            await uow.credentials.revoke_sandbox(sandbox_id)
            await uow.commit()

    async def close(self) -> None:
        """Cancel the batches in flight."""
        for batcher in (self._reads, self._writes, self._unpublished, self._credentials):
            await batcher.close()

    async def _read_agents(self, agent_ids: list[str]) -> list[AgentRecord | None]:
        found = await self.reads.by_ids(agent_ids)
        return [found.get(i) for i in agent_ids]

    async def _write_changes(
        self, changes: list[svc.StatusChange]
    ) -> list[AgentRecord | IllegalTransition | Conflict]:
        async with self.uow() as uow:
            results = await svc.change_statuses(uow, changes)
            await uow.commit()
        return results

    async def _issue(self, sandboxes: list[tuple[AgentRecord, str]]) -> list[str]:
        async with self.uow() as uow:
            return await run_execution.issue_credentials(uow, sandboxes)

    async def _count_unpublished(self, agent_ids: list[str]) -> list[int]:
        counts = await self.reads.unpublished_events(svc.AGGREGATE, agent_ids)
        return [counts.get(i, 0) for i in agent_ids]
