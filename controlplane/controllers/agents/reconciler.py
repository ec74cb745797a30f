"""The agent controller: a level-triggered reconcile loop (DESIGN §2, controller-runtime's
shape). Each `reconcile(agent_id)` reads the agent, compares it with the world (its
sandbox), makes one step, and says when to look again.

The controller keeps no state it cannot rebuild: at start it enqueues every agent and
removes sandboxes no agent owns, so `kill -9` at any moment leaks nothing and strands no
agent. A sandbox's id is recorded (Scheduled → Starting) *before* the sandbox is created.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.controllers.machinery.batching import Batcher
from controlplane.controllers.machinery.workqueue import RateLimiter, WorkQueue
from controlplane.data.outbox.writer import OutboxWriter
from controlplane.data.repositories.agents import AgentRepository
from controlplane.data.tables import tenants as tenants_table
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.agents.lifecycle import (
    IllegalTransition,
    Phase,
    RestartPolicy,
    restart_backoff_s,
    restart_decision,
)
from controlplane.domain.agents.model import AgentSpec
from controlplane.domain.errors import Conflict
from controlplane.domain.events.envelope import parse_rfc3339, rfc3339, utcnow
from controlplane.domain.events.registry import SchemaRegistry
from controlplane.domain.quantity import cpu_millis, memory_bytes
from controlplane.domain.records import AgentRecord
from controlplane.domain.scheduling.admission import Node, Pending, TenantUsage, schedule
from controlplane.observability import metrics as obs
from controlplane.runtimes.base import (
    ProbeSpec,
    Runtime,
    SandboxError,
    SandboxSpec,
    SandboxState,
)
from controlplane.service import agents as svc

log = structlog.get_logger("agentos.controller")


@dataclass
class ControllerConfig:
    """Times in seconds."""

    # Workers reconcile concurrently; their reads and writes are batched (controllers.machinery.batching).
    workers: int = 16
    resync_s: float = 30.0
    change_poll_s: float = 0.5
    starting_timeout_s: float = 120.0
    unschedulable_retry_s: float = 5.0
    restart_backoff_base_s: float = 1.0
    restart_backoff_max_s: float = 60.0
    # Ready requires every earlier event of the agent to be Published (DESIGN §2). Off only
    # when no relay runs (embedded mode): there, events stay in the outbox by design.
    require_published: bool = True
    nodes: list[Node] = field(default_factory=list)
    # Where the nodes come from when they are not fixed (the Kubernetes runtime's Nodes);
    # called once per scheduling pass.
    node_source: Callable[[], Awaitable[list[Node]]] | None = None


def sandbox_hash(spec: AgentSpec) -> str:
    """A short digest of the sandbox-shaping part of the spec."""
    raw = json.dumps(spec.sandbox_fingerprint(), sort_keys=True).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def sandbox_spec(record: AgentRecord, sandbox_id: str) -> SandboxSpec:
    """What the runtime needs, from the agent's spec."""
    spec = record.spec
    limits = spec.resources.limits
    cpu = limits.cpu or spec.resources.requests.cpu
    mem = limits.memory or spec.resources.requests.memory
    return SandboxSpec(
        sandbox_id=sandbox_id,
        agent_id=record.id,
        tenant=record.tenant,
        name=record.name,
        image=spec.image,
        runtime_class=spec.runtime.class_,
        command=list(spec.command),
        args=list(spec.args),
        env={e.name: e.value for e in spec.env},
        cpu_millis=cpu_millis(cpu) if cpu else 0,
        memory_bytes=memory_bytes(mem) if mem else 0,
        config=dict(spec.config),
        probe=probe_spec(spec),
        request_cpu_millis=spec.resources.request_cpu_millis(),
        request_memory_bytes=spec.resources.request_memory_bytes(),
        node=record.status.node or "",
        annotations=dict(record.annotations),
    )


def probe_spec(spec: AgentSpec) -> ProbeSpec | None:
    r = spec.readiness
    if r is None:
        return None
    return ProbeSpec(
        exec_command=list(r.exec.command) if r.exec else None,
        http_port=r.httpGet.port if r.httpGet else None,
        http_path=r.httpGet.path if r.httpGet else "/healthz",
        heartbeat=r.heartbeat is not None,
        period_s=r.periodSeconds,
        timeout_s=r.timeoutSeconds,
        failure_threshold=r.failureThreshold,
    )


class Controller:
    """Drives every agent through its lifecycle. One controller per database."""

    def __init__(
        self,
        engine: AsyncEngine,
        registry: SchemaRegistry,
        runtimes: dict[str, Runtime],
        config: ControllerConfig,
    ) -> None:
        self._engine = engine
        self._registry = registry
        self.runtimes = runtimes
        self.config = config
        self.queue = WorkQueue()
        self._limiter = RateLimiter()
        self._versions: dict[str, int] = {}
        self._probe_failures: dict[str, int] = {}
        self._schedule_wanted = asyncio.Event()
        self.on_reconciled: Callable[[str], None] | None = None
        self._reads: Batcher[str, AgentRecord | None] = Batcher(self._read_agents)
        self._writes: Batcher[svc.StatusChange, AgentRecord] = Batcher(self._write_changes)
        self._unpublished: Batcher[str, int] = Batcher(self._count_unpublished)
        for runtime in self.distinct_runtimes():
            # A runtime that can tell when its sandboxes or capacity change (Kubernetes: its
            # watches) wakes the controller instead of waiting for the next poll.
            subscribe = getattr(runtime, "subscribe", None)
            if subscribe is not None:
                subscribe(self.notify, self.want_schedule)

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self._engine, self._registry, principal="system:controller")

    async def _read_agents(self, agent_ids: list[str]) -> list[AgentRecord | None]:
        async with self._engine.connect() as conn:
            found = await AgentRepository(conn).by_ids(agent_ids)
        return [found.get(i) for i in agent_ids]

    async def _write_changes(
        self, changes: list[svc.StatusChange]
    ) -> list[AgentRecord | IllegalTransition | Conflict]:
        async with self.uow() as uow:
            results = await svc.change_statuses(uow, changes)
            await uow.commit()
        return results

    async def _count_unpublished(self, agent_ids: list[str]) -> list[int]:
        async with self._engine.connect() as conn:
            counts = await OutboxWriter(conn, self._registry).unpublished_by_aggregate(
                svc.AGGREGATE, agent_ids
            )
        return [counts.get(i, 0) for i in agent_ids]

    async def _move(
        self, record: AgentRecord, to_phase: Phase, reason: str, message: str, **changes: Any
    ) -> AgentRecord:
        """One phase transition (see service.agents.change_statuses); concurrent ones commit
        together. Raises Conflict, IllegalTransition."""
        moved = await self._writes.submit(
            svc.StatusChange(record, changes, to_phase, reason, message)
        )
        obs.observe_transition(record, moved)
        return moved

    async def _set_status(self, record: AgentRecord, **changes: Any) -> AgentRecord:
        """Status fields without a phase change; batched like `_move`. Raises Conflict."""
        return await self._writes.submit(svc.StatusChange(record, changes))

    def want_schedule(self) -> None:
        """Run a scheduling pass soon (quota or capacity changed)."""
        self._schedule_wanted.set()

    def notify(self, agent_id: str) -> None:
        """Something changed about `agent_id` (an in-process hint; polling also finds it)."""
        self.queue.add(agent_id)

    # -- loop ----------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        await self.remove_leaked_sandboxes()
        await self._poll_changes(enqueue_all=True)
        tasks = [asyncio.create_task(self._worker(stop)) for _ in range(self.config.workers)]
        tasks.append(asyncio.create_task(self._scheduler_loop(stop)))
        tasks.append(asyncio.create_task(self._poll_loop(stop)))
        log.info("controller started", workers=self.config.workers)
        try:
            await stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for batcher in (self._reads, self._writes, self._unpublished):
                await batcher.close()
            self.queue.shutdown()
            log.info("controller stopped")

    async def _worker(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            key = await self.queue.get()
            try:
                with obs.observe_reconcile(key):
                    requeue_after = await self.reconcile(key)
            except (Conflict, IllegalTransition) as exc:
                # Someone else moved the agent first: look again at the fresh state.
                log.debug("reconcile raced", agent_id=key, error=str(exc))
                self.queue.add_after(key, self._limiter.when(key))
            except Exception as exc:
                log.warning("reconcile failed", agent_id=key, error=f"{type(exc).__name__}: {exc}")
                self.queue.add_after(key, self._limiter.when(key))
            else:
                self._limiter.forget(key)
                if requeue_after is not None:
                    self.queue.add_after(key, requeue_after)
                if self.on_reconciled:
                    self.on_reconciled(key)
            finally:
                self.queue.done(key)

    async def _poll_loop(self, stop: asyncio.Event) -> None:
        last_resync = time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.change_poll_s)
            resync = time.monotonic() - last_resync >= self.config.resync_s
            try:
                await self._poll_changes(enqueue_all=resync)
                if resync:
                    last_resync = time.monotonic()
                    await self.remove_leaked_sandboxes()
            except Exception as exc:
                log.warning("poll failed", error=f"{type(exc).__name__}: {exc}")

    async def _poll_changes(self, *, enqueue_all: bool) -> None:
        """Enqueue agents whose resourceVersion moved (written by another process)."""
        async with self._engine.connect() as conn:
            current = await AgentRepository(conn).resource_versions()
        for agent_id, version in current.items():
            # `_versions` holds what the last reconcile read: the controller's own writes are
            # followed by a requeue anyway, so only foreign writes enqueue here.
            if enqueue_all or self._versions.get(agent_id) != version:
                self.queue.add(agent_id)
        for gone in self._versions.keys() - current.keys():
            del self._versions[gone]

    # -- scheduling ----------------------------------------------------------------------------

    async def _scheduler_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._schedule_wanted.wait()
            self._schedule_wanted.clear()
            try:
                await self.schedule_pass()
            except Exception as exc:
                log.warning("scheduling failed", error=f"{type(exc).__name__}: {exc}")

    async def schedule_pass(self) -> None:
        """Admit pending agents against quota and capacity; one pass, serialised.

        Reads the pending agents in full and only sums of what admitted agents hold (derived
        columns), so a pass costs what is pending, not every agent there is."""
        async with self._engine.connect() as conn:
            repo = AgentRepository(conn)
            waiting = await repo.pending()
            held = await repo.reservations((Phase.SCHEDULED, Phase.STARTING, Phase.READY))
            names = {a.tenant for a in waiting} | {r.tenant for r in held}
            quotas = dict(
                (
                    await conn.execute(
                        select(tenants_table.c.name, tenants_table.c.quota).where(
                            tenants_table.c.name.in_(names)
                        )
                    )
                ).all()
            )
        if self.config.node_source is not None:
            nodes = await self.config.node_source()
        else:
            nodes = [
                Node(n.name, n.cpu_millis, n.memory_bytes, n.max_agents) for n in self.config.nodes
            ]
        by_node = {n.name: n for n in nodes}
        usage = {
            name: TenantUsage(
                (quota or {}).get("agents"),
                (quota or {}).get("cpu_millis"),
                (quota or {}).get("memory_bytes"),
            )
            for name, quota in ((n, quotas.get(n)) for n in names)
        }
        for r in held:
            usage[r.tenant].reserve(r.cpu_millis, r.memory_bytes, r.agents)
            if r.node in by_node:
                by_node[r.node].reserve(r.cpu_millis, r.memory_bytes, r.agents)
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
            for a in waiting
            if self._restart_delay(a, now) <= 0
        ]
        decisions = schedule(pending, nodes, usage)
        records = {a.id: a for a in waiting}
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
        # A change that lost a race (stale resourceVersion) is looked at again by its reconcile.
        await asyncio.gather(*(self._writes.submit(c) for c in changes), return_exceptions=True)
        for agent_id in decisions.admitted:
            self.queue.add(agent_id)

    def _restart_delay(self, record: AgentRecord, now: datetime) -> float:
        failed_at = parse_rfc3339(record.status.failedAt) if record.status.failedAt else None
        if record.status.restartCount == 0 or failed_at is None:
            return 0.0
        backoff = restart_backoff_s(
            record.status.restartCount - 1,
            self.config.restart_backoff_base_s,
            self.config.restart_backoff_max_s,
        )
        return (failed_at + timedelta(seconds=backoff) - now).total_seconds()

    # -- reconcile -----------------------------------------------------------------------------

    async def reconcile(self, agent_id: str) -> float | None:
        """One step for `agent_id`. Returns seconds until it should be looked at again, or
        None when nothing is pending. Raises on failures worth a backoff retry."""
        record = await self._reads.submit(agent_id)
        if record is None:
            self._probe_failures.pop(agent_id, None)
            self._versions.pop(agent_id, None)
            return None
        self._versions[agent_id] = record.resource_version
        if record.phase is Phase.TERMINATING or record.deletion_requested_at is not None:
            return await self._terminate(record)
        handler = {
            Phase.CREATED: self._created,
            Phase.SCHEDULED: self._scheduled,
            Phase.STARTING: self._starting,
            Phase.READY: self._ready,
            Phase.FAILED: self._failed,
        }[record.phase]
        return await handler(record)

    async def _created(self, record: AgentRecord) -> float | None:
        delay = self._restart_delay(record, utcnow())
        if delay > 0:
            return delay
        self._schedule_wanted.set()
        return self.config.unschedulable_retry_s

    async def _scheduled(self, record: AgentRecord) -> float | None:
        # Unique per agent, generation and restart: a replacement never reuses the name of a
        # sandbox that may still be going away (a Pod terminating under the same name).
        sandbox_id = (
            f"{record.tenant}-{record.name}-{record.id[:8]}"
            f"-{record.generation}-{record.status.restartCount}"
        )
        starting = await self._move(
            record,
            Phase.STARTING,
            "SandboxCreating",
            f"sandbox {sandbox_id}",
            sandboxID=sandbox_id,
            startedAt=rfc3339(utcnow()),
            observedGeneration=record.generation,
            sandboxHash=sandbox_hash(record.spec),
        )
        self._versions[record.id] = starting.resource_version
        return await self._starting(starting)

    def _runtime(self, record: AgentRecord) -> Runtime:
        try:
            return self.runtimes[record.spec.runtime.class_]
        except KeyError:
            raise SandboxError(
                "RuntimeUnavailable", f"no runtime serves class {record.spec.runtime.class_!r}"
            ) from None

    async def _fail(
        self, record: AgentRecord, reason: str, message: str, exit_code: int | None = None
    ) -> float:
        conditions = svc.merge_condition(
            record.status, svc.condition("Ready", "False", reason, message, record.generation)
        )
        await self._move(
            record,
            Phase.FAILED,
            reason,
            message,
            failedAt=rfc3339(utcnow()),
            exitCode=exit_code,
            conditions=conditions,
        )
        self._probe_failures.pop(record.id, None)
        log.info("agent failed", agent=record.name, tenant=record.tenant, reason=reason)
        return 0

    async def _starting(self, record: AgentRecord) -> float | None:
        sandbox_id = record.status.sandboxID
        assert sandbox_id is not None
        started = parse_rfc3339(record.status.startedAt) if record.status.startedAt else utcnow()
        if (utcnow() - started).total_seconds() > self.config.starting_timeout_s:
            return await self._fail(
                record,
                "ReadinessTimeout",
                f"not ready within {self.config.starting_timeout_s:.0f}s",
            )
        try:
            runtime = self._runtime(record)
            state = await runtime.status(sandbox_id)
            if state.state is SandboxState.MISSING:
                await runtime.create(sandbox_spec(record, sandbox_id))
                state = await runtime.start(sandbox_id)
            elif state.state is SandboxState.CREATED:
                state = await runtime.start(sandbox_id)
        except SandboxError as exc:
            return await self._fail(record, exc.reason, exc.message)
        if state.state is SandboxState.EXITED:
            return await self._fail(
                record, "SandboxExited", f"exited with code {state.exit_code}", state.exit_code
            )
        probe = probe_spec(record.spec)
        if probe is not None and not await runtime.probe(sandbox_id, probe):
            # A just-started agent is usually moments from answering: retry soon (10 ms, as
            # often as `bench.lifecycle` polls a bare container), backing off geometrically to
            # periodSeconds rather than waiting a whole period at once.
            since_s = (utcnow() - started).total_seconds()
            return min(probe.period_s, max(0.01, since_s / 2))
        if self.config.require_published and await self._unpublished.submit(record.id):
            return 0.05  # the relay is moments behind; Ready waits for it (DESIGN §2)
        conditions = svc.merge_condition(
            record.status,
            svc.condition(
                "Ready",
                "True",
                "ProbeSucceeded",
                "the agent answers its readiness probe",
                record.generation,
            ),
        )
        await self._move(
            record,
            Phase.READY,
            "Ready",
            "the agent answers its readiness probe",
            readyAt=rfc3339(utcnow()),
            conditions=conditions,
        )
        return probe.period_s if probe else self.config.resync_s

    async def _ready(self, record: AgentRecord) -> float | None:
        sandbox_id = record.status.sandboxID
        assert sandbox_id is not None
        if record.generation != record.status.observedGeneration:
            if sandbox_hash(record.spec) != record.status.sandboxHash:
                return await self._replace(record)
            await self._set_status(record, observedGeneration=record.generation)
        runtime = self._runtime(record)
        state = await runtime.status(sandbox_id)
        if state.state in (SandboxState.EXITED, SandboxState.MISSING):
            return await self._fail(
                record,
                "SandboxExited",
                f"sandbox {state.state.value.lower()} (exit code {state.exit_code})",
                state.exit_code,
            )
        probe = probe_spec(record.spec)
        if probe is None:
            return self.config.resync_s
        if await runtime.probe(sandbox_id, probe):
            self._probe_failures.pop(record.id, None)
            return probe.period_s
        failures = self._probe_failures.get(record.id, 0) + 1
        self._probe_failures[record.id] = failures
        if failures >= probe.failure_threshold:
            return await self._fail(
                record, "ProbeFailed", f"readiness probe failed {failures} times in a row"
            )
        return probe.period_s

    async def _replace(self, record: AgentRecord) -> float:
        """The sandbox part of the spec changed: remove the sandbox and start over."""
        if record.status.sandboxID:
            await self._runtime(record).remove(record.status.sandboxID)
        await self._move(
            record,
            Phase.CREATED,
            "SpecChanged",
            f"generation {record.generation} needs a new sandbox",
            sandboxID=None,
            node=None,
            readyAt=None,
            observedGeneration=record.generation,
        )
        return 0

    async def _failed(self, record: AgentRecord) -> float | None:
        # Compensation (DESIGN §2): the reservation went with the phase; the sandbox goes now.
        if record.status.sandboxID:
            await self._runtime(record).remove(record.status.sandboxID)
            record = await self._set_status(record, sandboxID=None)
        restart, why = restart_decision(
            RestartPolicy(record.spec.restartPolicy),
            record.status.restartCount,
            record.spec.maxRestarts,
            record.status.exitCode,
        )
        if not restart:
            if record.status.reason != why:
                last = record.status.message
                message = {
                    "RestartPolicyNever": f"restartPolicy is Never; last failure: {last}",
                    "Completed": "exited 0 and restartPolicy is OnFailure",
                    "MaxRestartsExceeded": (
                        f"restarted {record.status.restartCount} times, maxRestarts is "
                        f"{record.spec.maxRestarts}; last failure: {last}"
                    ),
                }[why]
                await self._set_status(record, reason=why, message=message)
            self._schedule_wanted.set()  # capacity freed
            return None
        await self._move(
            record,
            Phase.CREATED,
            "Restarting",
            f"restart {record.status.restartCount + 1} of {record.spec.maxRestarts}",
            restartCount=record.status.restartCount + 1,
            node=None,
            readyAt=None,
        )
        self._schedule_wanted.set()
        return 0

    async def _terminate(self, record: AgentRecord) -> float | None:
        if record.phase is not Phase.TERMINATING:
            record = await self._move(
                record, Phase.TERMINATING, "DeletionRequested", "deletion requested"
            )
        # The sandbox id is recorded before a sandbox is created, so it names the only one the
        # agent can own; strays from a crash are the leak sweep's business, not each delete's.
        runtime = self.runtimes.get(record.spec.runtime.class_)
        if record.status.sandboxID and runtime is not None:
            await runtime.remove(record.status.sandboxID)
        async with self.uow() as uow:
            fresh = await uow.agents.by_id(record.id)
            if fresh is not None:
                await svc.finalize_deletion(uow, fresh)
        self._probe_failures.pop(record.id, None)
        self._schedule_wanted.set()  # capacity freed
        log.info("agent deleted", agent=record.name, tenant=record.tenant)
        return None

    def distinct_runtimes(self) -> list[Runtime]:
        """Each runtime once (one backend may serve several runtime classes)."""
        return list({id(r): r for r in self.runtimes.values()}.values())

    async def remove_leaked_sandboxes(self) -> int:
        """Remove sandboxes that no agent owns (left by a crash). Returns how many."""
        async with self._engine.connect() as conn:
            owned = await AgentRepository(conn).sandbox_ids()
        removed = 0
        for runtime in self.distinct_runtimes():
            for sid in await runtime.list_sandboxes():
                if sid not in owned:
                    await runtime.remove(sid)
                    removed += 1
        if removed:
            log.info("removed leaked sandboxes", count=removed)
        return removed
