"""The agent reconciler: level-triggered, one step per call (controller-runtime's shape;
adr/0004-lifecycle-controller-and-runtimes.md, architecture/state-machines.md).

Each `reconcile(agent_id)` reads the agent, compares it with the world (its sandbox), makes
one step, and says when to look again. It keeps no state it cannot rebuild (probe failure
counts only), so `kill -9` at any moment strands no agent. A sandbox's id is recorded
(Scheduled → Starting) *before* the sandbox is created; strays from a crash are the leak
sweep's (leak_sweep.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from controlplane.controllers.agents.config import ControllerConfig
from controlplane.controllers.agents.sandbox import (
    probe_spec,
    proxy_env,
    runtime_for,
    sandbox_hash,
    sandbox_name,
    sandbox_spec,
)
from controlplane.controllers.agents.scheduling import restart_delay
from controlplane.controllers.agents.store import AgentStore
from controlplane.controllers.agents.suspension import Suspender
from controlplane.controllers.agents.suspension import state as suspension_state
from controlplane.controllers.agents.warm_pools import WarmPools
from controlplane.controllers.machinery.sources import VersionPoller
from controlplane.domain.agents.lifecycle import Phase, RestartPolicy, restart_decision
from controlplane.domain.events.envelope import parse_rfc3339, rfc3339, utcnow
from controlplane.domain.records import AgentRecord
from controlplane.observability import metrics as obs
from controlplane.runtimes.base import Runtime, SandboxError, SandboxSpec, SandboxState
from controlplane.service import agents as svc

log = structlog.get_logger("agentos.controller")


class AgentReconciler:
    """Drives one agent at a time through its lifecycle (a machinery.manager.Reconciler).

    `versions` learns what each reconcile read (so the poll skips the controller's own
    writes); `want_schedule()` asks for a scheduling pass (an agent waits, capacity freed).
    """

    def __init__(
        self,
        store: AgentStore,
        runtimes: dict[str, Runtime],
        config: ControllerConfig,
        *,
        versions: VersionPoller,
        want_schedule: Callable[[], None],
        pools: WarmPools | None = None,
    ) -> None:
        self._store = store
        self._pools = pools
        self.runtimes = runtimes
        self.config = config
        self._versions = versions
        self._want_schedule = want_schedule
        self._probe_failures: dict[str, int] = {}
        # When this process saw each agent's sandbox start (time.monotonic()), for probing a
        # starting agent soon after, not after its create time.
        self._sandbox_started: dict[str, float] = {}
        self._suspender = Suspender(store, runtimes, self._move, self._set_status)

    async def reconcile(self, key: str) -> float | None:
        """One step for agent `key`. Returns seconds until it should be looked at again, or
        None when nothing is pending. Raises on failures worth a backoff retry (Conflict,
        IllegalTransition: someone else moved the agent first)."""
        record = await self._store.read(key)
        if record is None:
            self._probe_failures.pop(key, None)
            self._sandbox_started.pop(key, None)
            self._versions.forget(key)
            return None
        self._versions.observe(key, record.resource_version)
        if record.phase is Phase.TERMINATING or record.deletion_requested_at is not None:
            return await self._terminate(record)
        handler = {
            Phase.CREATED: self._created,
            Phase.SCHEDULED: self._scheduled,
            Phase.STARTING: self._starting,
            Phase.READY: self._ready,
            Phase.SUSPENDED: self._suspender.suspended,
            Phase.FAILED: self._failed,
        }[record.phase]
        return await handler(record)

    # -- writes --------------------------------------------------------------------------------

    async def _move(
        self, record: AgentRecord, to_phase: Phase, reason: str, message: str, **changes: Any
    ) -> AgentRecord:
        """One phase transition (see service.agents.change_statuses); concurrent ones commit
        together. Raises Conflict, IllegalTransition."""
        moved = await self._store.write(
            svc.StatusChange(record, changes, to_phase, reason, message)
        )
        obs.observe_transition(record, moved)
        return moved

    async def _set_status(self, record: AgentRecord, **changes: Any) -> AgentRecord:
        """Status fields without a phase change; batched like `_move`. Raises Conflict."""
        return await self._store.write(svc.StatusChange(record, changes))

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
        self._sandbox_started.pop(record.id, None)
        log.info("agent failed", agent=record.name, tenant=record.tenant, reason=reason)
        return 0

    async def _sandbox_spec(self, record: AgentRecord, sandbox_id: str) -> SandboxSpec:
        """The sandbox's spec, with the gateway's address, a credential of its own and the
        egress proxy (with that credential) as its HTTP proxy."""
        spec = sandbox_spec(record, sandbox_id)
        if self.config.gateway_url:
            token = await self._store.issue_credential(record, sandbox_id)
            spec.env.update(
                AGENTOS_GATEWAY_URL=self.config.gateway_url,
                AGENTOS_AGENT_TOKEN=token,
                AGENTOS_RUN_CONCURRENCY=str(record.spec.runs.concurrency),
            )
            if self.config.egress_proxy_url:
                spec.env.update(
                    proxy_env(self.config.egress_proxy_url, token, self.config.gateway_url)
                )
        return spec

    # -- phases --------------------------------------------------------------------------------

    async def _created(self, record: AgentRecord) -> float | None:
        delay = restart_delay(record, utcnow(), self.config)
        if delay > 0:
            return delay
        self._want_schedule()
        return self.config.unschedulable_retry_s

    async def _scheduled(self, record: AgentRecord) -> float | None:
        # A warm sandbox of a matching pool is recorded like one to be created (warm_pools.py).
        warm = self._pools.claim(record) if self._pools else None
        sandbox_id = warm or sandbox_name(record)
        reason = "WarmSandboxClaimed" if warm else "SandboxCreating"
        move = self._move(
            record,
            Phase.STARTING,
            reason,
            f"claimed warm sandbox {warm}" if warm else f"sandbox {sandbox_id}",
            sandboxID=sandbox_id,
            startedAt=rfc3339(utcnow()),
            observedGeneration=record.generation,
            sandboxHash=sandbox_hash(record.spec),
        )
        if warm and self._pools:
            return await self._claimed(record, warm, move, self._pools)
        starting = await move
        self._versions.observe(record.id, starting.resource_version)
        return await self._starting(starting)

    async def _claimed(
        self, record: AgentRecord, warm: str, move: Awaitable[AgentRecord], pools: WarmPools
    ) -> float | None:
        """Record the claim of warm sandbox `warm` while its credential is issued (valid only
        once the claim is recorded), then hand it off (warm_pools.py)."""
        try:
            starting, spec = await asyncio.gather(move, self._sandbox_spec(record, warm))
        except BaseException:
            pools.give_back(record, warm)
            raise
        self._versions.observe(record.id, starting.resource_version)
        try:
            handed = await pools.hand_off(runtime_for(self.runtimes, record), warm, spec)
        except SandboxError as exc:
            return await self._fail(starting, exc.reason, exc.message)
        if handed:
            self._sandbox_started[record.id] = time.monotonic()
            unpublished = lambda: self._store.unpublished(record.id)  # noqa: E731
            await pools.until_started(
                runtime_for(self.runtimes, record),
                warm,
                probe_spec(record.spec),
                unpublished if self.config.require_published else None,
            )
        return await self._starting(starting)

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
            runtime = runtime_for(self.runtimes, record)
            if suspension_state(record) == "Resuming":
                state = await self._suspender.resume(record)
                self._sandbox_started[record.id] = time.monotonic()
            else:
                state = await runtime.status(sandbox_id)
            if state.state is SandboxState.MISSING:
                await runtime.create(await self._sandbox_spec(record, sandbox_id))
                state = await runtime.start(sandbox_id)
                self._sandbox_started[record.id] = time.monotonic()
            elif state.state is SandboxState.CREATED:
                state = await runtime.start(sandbox_id)
                self._sandbox_started[record.id] = time.monotonic()
            # A claimed warm sandbox not handed off yet (the controller stopped in between).
            pools = self._pools if state.state is SandboxState.RUNNING else None
            if pools and await pools.awaits_handoff(runtime, sandbox_id):
                await pools.hand_off(
                    runtime, sandbox_id, await self._sandbox_spec(record, sandbox_id)
                )
                self._sandbox_started[record.id] = time.monotonic()
        except SandboxError as exc:
            return await self._fail(record, exc.reason, exc.message)
        if state.state is SandboxState.EXITED:
            return await self._fail(
                record, "SandboxExited", f"exited with code {state.exit_code}", state.exit_code
            )
        probe = probe_spec(record.spec)
        if probe is not None and not await runtime.probe(sandbox_id, probe):
            # A just-started agent is usually moments from answering: retry soon (10 ms, as
            # often as `bench.lifecycle` polls a bare container), backing off geometrically
            # (a quarter of the time since the sandbox started) to periodSeconds rather than
            # waiting a whole period at once.
            at = self._sandbox_started.get(record.id)
            since_s = time.monotonic() - at if at else (utcnow() - started).total_seconds()
            return min(probe.period_s, max(0.01, since_s / 4))
        self._sandbox_started.pop(record.id, None)
        if self._pools:
            self._pools.observe_ready(record.id)
        if self.config.require_published and await self._store.unpublished(record.id):
            # The relay is moments behind; Ready waits for it (architecture/state-machines.md §3).
            return 0.05
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
            suspension=None,
        )
        return probe.period_s if probe else self.config.resync_s

    async def _ready(self, record: AgentRecord) -> float | None:
        sandbox_id = record.status.sandboxID
        assert sandbox_id is not None
        if record.generation != record.status.observedGeneration:
            if sandbox_hash(record.spec) != record.status.sandboxHash:
                return await self._replace(record)
            await self._set_status(record, observedGeneration=record.generation)
        if suspension_state(record) == "Suspending":
            return await self._suspender.suspend(record)
        runtime = runtime_for(self.runtimes, record)
        state = await runtime.status(sandbox_id)
        if state.state in (SandboxState.EXITED, SandboxState.MISSING):
            return await self._fail(
                record,
                "SandboxExited",
                f"sandbox {state.state.value.lower()} (exit code {state.exit_code})",
                state.exit_code,
            )
        if await self._suspender.idle(record):
            return 0
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
            await self._remove_sandbox(record, record.status.sandboxID)
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
        # Compensation (architecture/state-machines.md): the reservation went with the phase;
        # the sandbox goes now.
        if record.status.sandboxID:
            await self._remove_sandbox(record, record.status.sandboxID)
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
            self._want_schedule()  # capacity freed
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
        self._want_schedule()
        return 0

    async def _remove_sandbox(self, record: AgentRecord, sandbox_id: str) -> None:
        """Remove the sandbox, then revoke its credential (architecture/gateway-protocol.md)."""
        await runtime_for(self.runtimes, record).remove(sandbox_id)
        if self.config.gateway_url:
            await self._store.revoke_credentials(sandbox_id)

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
        async with self._store.uow() as uow:
            fresh = await uow.agents.by_id(record.id)
            if fresh is not None:
                await svc.finalize_deletion(uow, fresh)
        self._probe_failures.pop(record.id, None)
        self._want_schedule()  # capacity freed
        log.info("agent deleted", agent=record.name, tenant=record.tenant)
        return None
