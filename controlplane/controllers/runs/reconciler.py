"""The run controller (architecture/runs.md, "The run controller"): level-triggered passes
over the runs table that move what no request moves — dispatch, timeouts, deliveries left
behind by crashes — and keep one JetStream consumer per agent.

Each pass reads the world, makes the steps it finds due, and returns; a `Trigger` runs the
pass on every `notify()` and every `interval_s`, one pass at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import structlog

from controlplane.controllers.machinery.sources import Trigger
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.agents.lifecycle import Phase
from controlplane.domain.errors import Conflict
from controlplane.domain.events.envelope import OutboxState, utcnow
from controlplane.domain.runs.lifecycle import (
    NON_TERMINAL,
    TERMINAL,
    IllegalTransition,
    RunPhase,
    RunReason,
)
from controlplane.domain.runs.model import RunRecord
from controlplane.messaging.run_queues import RunQueues
from controlplane.service import approvals
from controlplane.service.runs import transition as move_run

log = structlog.get_logger("agentos.runs")
PRINCIPAL = "system:run-controller"


@dataclass
class RunControllerConfig:
    """Times in seconds. `stale_after_s`: a held delivery without a heartbeat for this long
    is lost (JetStream's ack wait)."""

    interval_s: float = 0.5
    consumer_sync_s: float = 5.0
    stale_after_s: float = 30.0


class RunController:
    """The passes over runs, on a UnitOfWork factory and the run queues."""

    def __init__(
        self,
        uow: Callable[[str], UnitOfWork],
        queues: RunQueues,
        config: RunControllerConfig | None = None,
    ) -> None:
        self._uow = uow
        self.queues = queues
        self.config = config or RunControllerConfig()
        self._trigger = Trigger(self.sweep, "run sweep")
        self._last_consumer_sync = 0.0

    def notify(self) -> None:
        """Something about runs changed: sweep soon."""
        self._trigger.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep on every notify and every `interval_s` until `stop`."""
        await self.queues.setup()

        async def tick() -> None:
            while not stop.is_set():
                self._trigger.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.config.interval_s)

        tasks = [asyncio.create_task(tick()), asyncio.create_task(self._trigger.run(stop))]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def sweep(self) -> None:
        """One pass: dispatch, timeouts, ended and lost deliveries, consumers."""
        await self.dispatch()
        await self.time_out()
        await self.end_deliveries()
        await self.redeliver_lost()
        await self.expire_approvals()
        now = asyncio.get_running_loop().time()
        if now - self._last_consumer_sync >= self.config.consumer_sync_s:
            await self.sync_consumers()
            self._last_consumer_sync = now

    async def _move(self, record: RunRecord, to: RunPhase, reason: str, message: str) -> bool:
        """One transition in its own UnitOfWork; False when someone moved the run first."""
        try:
            async with self._uow(PRINCIPAL) as uow:
                fresh = await uow.runs.by_id(record.id, for_update=True)
                if fresh is None or fresh.resource_version != record.resource_version:
                    return False
                await move_run(uow, fresh, to, reason, message)
                await uow.commit()
        except (Conflict, IllegalTransition):
            return False
        return True

    async def dispatch(self) -> None:
        """Pending runs whose dispatch message is Published are Dispatched; a dead-lettered
        one fails its run (DispatchFailed)."""
        async with self._uow(PRINCIPAL) as uow:
            pending = await uow.deliveries.pending_dispatch()
        for record, state in pending:
            if state == OutboxState.DEAD_LETTERED:
                await self._move(
                    record,
                    RunPhase.FAILED,
                    RunReason.DISPATCH_FAILED,
                    "the dispatch message could not be published",
                )
            else:
                await self._move(
                    record, RunPhase.DISPATCHED, RunReason.DISPATCHED, "queued for its agent"
                )

    async def time_out(self) -> None:
        """Every live run past its deadline is TimedOut (its delivery ended next pass)."""
        async with self._uow(PRINCIPAL) as uow:
            overdue = await uow.runs.overdue(utcnow(), NON_TERMINAL)
        for record in overdue:
            if await self._move(
                record,
                RunPhase.TIMED_OUT,
                RunReason.TIMEOUT,
                f"not finished within {record.spec.timeoutSeconds}s",
            ):
                log.info("run timed out", run=record.name, tenant=record.tenant)

    async def end_deliveries(self) -> None:
        """A terminal run (canceled, timed out) whose delivery is still held: terminate the
        delivery, so JetStream never hands the run out again."""
        async with self._uow(PRINCIPAL) as uow:
            held = await uow.deliveries.held_by(terminal=True)
        for delivery in held:
            await self.queues.term(delivery.reply)
            async with self._uow(PRINCIPAL) as uow:
                await uow.deliveries.release(delivery.run.id)
                await uow.commit()

    async def redeliver_lost(self) -> None:
        """Held deliveries of live runs whose sandbox is gone (the agent is not Ready on the
        sandbox that took the run) are redelivered at once; those silent longer than the ack
        wait on their last attempt fail (DeliveryExhausted: JetStream will not deliver
        them again) and their message is deleted."""
        async with self._uow(PRINCIPAL) as uow:
            held = await uow.deliveries.held_by(terminal=False)
            agents = {r.run.agent_id: await uow.agents.by_id(r.run.agent_id) for r in held}
        stale_before = utcnow() - timedelta(seconds=self.config.stale_after_s)
        for delivery in held:
            agent = agents.get(delivery.run.agent_id)
            gone = agent is None or agent.phase is not Phase.READY
            if delivery.run.phase not in (RunPhase.RUNNING, RunPhase.INPUT_REQUIRED):
                continue
            silent = delivery.heartbeat_at is not None and delivery.heartbeat_at < stale_before
            if not gone and not silent:
                continue
            if agent is not None and delivery.run.status.attempt >= agent.spec.runs.maxAttempts:
                await self._exhaust(delivery.run, delivery.stream_seq)
                continue
            if delivery.run.phase is RunPhase.INPUT_REQUIRED:
                await self._hand_back(delivery.run, delivery.reply)
                continue
            if await self._move(
                delivery.run, RunPhase.DISPATCHED, RunReason.REDELIVERED, "its sandbox is gone"
            ):
                await self.queues.nak(delivery.reply)
                async with self._uow(PRINCIPAL) as uow:
                    await uow.deliveries.release(delivery.run.id)
                    await uow.commit()

    async def _hand_back(self, record: RunRecord, reply: str) -> None:
        """A run waiting for approval lost its sandbox: it stays InputRequired (it holds
        nothing but its slot), its delivery goes back to be taken by the next sandbox."""
        await self.queues.nak(reply)
        async with self._uow(PRINCIPAL) as uow:
            await uow.deliveries.release(record.id)
            await uow.commit()

    async def expire_approvals(self) -> None:
        """Pending approvals past their `expiresAt` expire (a rejection; the run goes on), and
        so do those of runs that ended without a decision (canceled, timed out)."""
        async with self._uow(PRINCIPAL) as uow:
            due = await uow.approvals.due(utcnow())
            due += await uow.approvals.pending_of_ended_runs(TERMINAL)
        for approval in due:
            try:
                async with self._uow(PRINCIPAL) as uow:
                    if await approvals.expire(uow, approval.id):
                        log.info("approval expired", approval=approval.id, run=approval.run_name)
            except (Conflict, IllegalTransition):
                continue

    async def _exhaust(self, record: RunRecord, stream_seq: int) -> None:
        message = f"{record.status.attempt} deliveries, the last one lost with its sandbox"
        if await self._move(record, RunPhase.FAILED, RunReason.DELIVERY_EXHAUSTED, message):
            await self.queues.delete_message(stream_seq)
            async with self._uow(PRINCIPAL) as uow:
                await uow.deliveries.release(record.id)
                await uow.deliveries.dead_letter(record.id, message, "runs:controller")
                await uow.commit()

    async def sync_consumers(self) -> None:
        """One consumer per agent: delete those of agents that are gone (their live runs
        fail, AgentDeleted), then create the missing ones (with the agent's spec.runs)."""
        async with self._uow(PRINCIPAL) as uow:
            agents = {a.id: a for a in await uow.agents.list()}
        existing = await self.queues.consumers()
        # Orphans first: the server caps consumers per stream, and the new need room.
        for agent_id in existing - agents.keys():
            async with self._uow(PRINCIPAL) as uow:
                orphans = await uow.deliveries.live_of_agents([agent_id])
            for record in orphans:
                await self._move(
                    record, RunPhase.FAILED, RunReason.AGENT_DELETED, "its agent was deleted"
                )
            await self.queues.delete_consumer(agent_id)
        for agent_id, agent in agents.items():
            await self.queues.ensure_consumer(agent.tenant, agent_id, agent.spec.runs)
