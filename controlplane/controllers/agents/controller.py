"""The agent controller: the agent reconciler in the machinery's manager, with its
scheduling trigger, its poll and the leak sweep. One controller per database.

Built by controlplane/bootstrap.py (`build_controller`), and by the tests and benchmarks.
At start it removes sandboxes no agent owns and enqueues every agent, so it keeps no state
it cannot rebuild.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from controlplane.controllers.agents.config import ControllerConfig
from controlplane.controllers.agents.leak_sweep import remove_leaked_sandboxes
from controlplane.controllers.agents.reconciler import AgentReconciler
from controlplane.controllers.agents.sandbox import distinct_runtimes
from controlplane.controllers.agents.scheduling import Scheduler
from controlplane.controllers.agents.store import AgentStore
from controlplane.controllers.agents.warm_pools import WarmPools
from controlplane.controllers.machinery.manager import Manager
from controlplane.controllers.machinery.sources import Trigger, VersionPoller
from controlplane.controllers.machinery.workqueue import WorkQueue
from controlplane.data.repositories.agent_reads import Database
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.agents.lifecycle import IllegalTransition
from controlplane.domain.errors import Conflict
from controlplane.domain.events.registry import SchemaRegistry
from controlplane.observability import metrics as obs
from controlplane.runtimes.base import Runtime
from controlplane.runtimes.capabilities import capabilities

__all__ = ["Controller", "ControllerConfig"]


class Controller:
    """`await Controller(engine, registry, runtimes, config).run(stop)` until `stop` is set.

    `runtimes`: runtime class → runtime (one backend may serve several classes).
    """

    def __init__(
        self,
        engine: Database,
        registry: SchemaRegistry,
        runtimes: dict[str, Runtime],
        config: ControllerConfig,
    ) -> None:
        self.runtimes = runtimes
        self.config = config
        self.queue = WorkQueue()
        self._store = AgentStore(engine, registry)
        self._scheduler = Scheduler(self._store, config, self.queue.add)
        self._schedule = Trigger(self._scheduler.schedule_pass, "scheduling")
        self._poller = VersionPoller(
            self._store.reads.resource_versions,
            self.queue.add,
            interval_s=config.change_poll_s,
            resync_s=config.resync_s,
            on_resync=self.remove_leaked_sandboxes,
        )
        self.pools = WarmPools(config.warm_pools, runtimes, self._store.reads.sandbox_ids)
        self._reconciler = AgentReconciler(
            self._store,
            runtimes,
            config,
            versions=self._poller,
            want_schedule=self._schedule.set,
            pools=self.pools,
        )
        self._manager = Manager(
            self._reconciler,
            workers=config.workers,
            queue=self.queue,
            quiet=(Conflict, IllegalTransition),
            instrument=obs.observe_reconcile,
        )
        self._manager.add(self._schedule.run)
        self._manager.add(self._poller.run)
        self._manager.add(self.pools.run)
        for runtime in self.distinct_runtimes():
            # A runtime that can tell when its sandboxes or capacity change (Kubernetes: its
            # watches) wakes the controller instead of waiting for the next poll.
            watches = capabilities(runtime).watches
            if watches is not None:
                watches.subscribe(self.notify, self.want_schedule)

    @property
    def on_reconciled(self) -> Callable[[str], None] | None:
        """Called with the agent id after each reconcile that did not raise."""
        return self._manager.on_reconciled

    @on_reconciled.setter
    def on_reconciled(self, callback: Callable[[str], None] | None) -> None:
        self._manager.on_reconciled = callback

    def uow(self) -> UnitOfWork:
        """A UnitOfWork of the controller (principal `system:controller`)."""
        return self._store.uow()

    def want_schedule(self) -> None:
        """Run a scheduling pass soon (quota or capacity changed)."""
        self._schedule.set()

    def notify(self, agent_id: str) -> None:
        """Something changed about `agent_id` (an in-process hint; polling also finds it)."""
        self._manager.notify(agent_id)

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep leaks, enqueue every agent, then reconcile until `stop` is set."""
        try:
            await self.remove_leaked_sandboxes()
            await self._poller.poll(enqueue_all=True)
            await self._manager.run(stop)
        finally:
            await self._store.close()

    async def schedule_pass(self) -> None:
        """One scheduling pass (scheduling.py); callers serialise passes."""
        await self._scheduler.schedule_pass()

    async def reconcile(self, agent_id: str) -> float | None:
        """One step for `agent_id` (reconciler.py): seconds until the next look, or None."""
        return await self._reconciler.reconcile(agent_id)

    def distinct_runtimes(self) -> list[Runtime]:
        """Each runtime once (one backend may serve several runtime classes)."""
        return distinct_runtimes(self.runtimes)

    async def remove_leaked_sandboxes(self) -> int:
        """Remove sandboxes that no agent owns (left by a crash). Returns how many."""
        return await remove_leaked_sandboxes(
            self._store.reads, self.distinct_runtimes(), self.pools.keep
        )
