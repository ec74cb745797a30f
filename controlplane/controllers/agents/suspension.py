"""The agent controller's suspend and resume steps (adr/0019-suspend-resume.md,
architecture/state-machines.md).

- Ready and `status.suspension.state` "Suspending" (asked through service/suspension.py, or
  idle for `spec.runs.idleSuspendSeconds`): once no run is in flight, the runtime suspends
  the sandbox (probes are not run meanwhile: TCP state blocks a gVisor checkpoint); only then
  Ready → Suspended. A crash before that leaves the agent Ready with the request standing,
  and the runtime's suspend is idempotent, so the next reconcile finishes it.
- Suspended: a run waiting in its queue (Pending or Dispatched) moves it Suspended →
  Starting ("Resuming"); so does `agentos resume`.
- Starting and "Resuming": the runtime resumes the sandbox (idempotent too), marked
  "Resumed"; the usual probe then makes it Ready, which clears `status.suspension`.

A runtime without the Suspends capability (Kubernetes), or one that refuses (gVisor by
runtime name), leaves the agent Ready with condition Suspended=False, reason
SuspendUnsupported. A checkpoint refused (a TCP endpoint, even in TIME_WAIT, in the sandbox)
is retried for `GIVE_UP_S`, then the request is dropped (reason CheckpointFailed).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from controlplane.controllers.agents.sandbox import runtime_for
from controlplane.controllers.agents.store import AgentStore
from controlplane.domain.agents.lifecycle import Phase
from controlplane.domain.events.envelope import parse_rfc3339, rfc3339, utcnow
from controlplane.domain.records import AgentRecord
from controlplane.domain.runs.lifecycle import RunPhase
from controlplane.observability import suspend_metrics as m
from controlplane.runtimes.base import Runtime, SandboxError, SandboxStatus
from controlplane.runtimes.capabilities import Suspends, capabilities
from controlplane.service import agents as svc
from controlplane.service import suspension as sus

log = structlog.get_logger("agentos.controller")

IN_FLIGHT = (RunPhase.DISPATCHED, RunPhase.RUNNING, RunPhase.INPUT_REQUIRED)
WAITING = (RunPhase.PENDING, RunPhase.DISPATCHED)
GIVE_UP_S = 90.0  # a TIME_WAIT endpoint lasts 60 s in gVisor's network stack
RETRY_S = 2.0
SUSPENDED_POLL_S = 0.5  # how often a suspended agent's queue is looked at

Move = Callable[..., Awaitable[AgentRecord]]


def state(record: AgentRecord) -> str:
    """`status.suspension.state`, "" when none."""
    return str((record.status.suspension or {}).get("state", ""))


class Suspender:
    """Suspend and resume steps for the reconciler; `move` and `set_status` are its writes."""

    def __init__(
        self,
        store: AgentStore,
        runtimes: dict[str, Runtime],
        move: Move,
        set_status: Callable[..., Awaitable[AgentRecord]],
    ) -> None:
        self._store = store
        self._runtimes = runtimes
        self._move = move
        self._set_status = set_status
        self._busy_at: dict[str, float] = {}  # time.monotonic() a run was last seen in flight
        self._started_at = time.monotonic()

    def _suspends(self, record: AgentRecord) -> Suspends | None:
        return capabilities(runtime_for(self._runtimes, record)).suspends

    async def _runs(self, record: AgentRecord, phases: tuple[RunPhase, ...]) -> int:
        async with self._store.uow() as uow:
            return await uow.runs.count(record.id, phases)

    async def idle(self, record: AgentRecord) -> bool:
        """A Ready agent idle for `spec.runs.idleSuspendSeconds` (no run in flight or waiting,
        counted in this process) is marked Suspending; True if it was."""
        idle_s = record.spec.runs.idleSuspendSeconds
        if idle_s <= 0 or self._suspends(record) is None:
            return False
        now = time.monotonic()
        if await self._runs(record, (RunPhase.PENDING, *IN_FLIGHT)):
            self._busy_at[record.id] = now
            return False
        ready_at = parse_rfc3339(record.status.readyAt) if record.status.readyAt else utcnow()
        since_ready_s = (utcnow() - ready_at).total_seconds()
        idle_for_s = min(since_ready_s, now - self._busy_at.get(record.id, self._started_at))
        if idle_for_s < idle_s:
            return False
        message = f"no run for {idle_s}s (spec.runs.idleSuspendSeconds)"
        await self._set_status(record, **sus.suspend_changes(record, "Idle", message))
        return True

    async def suspend(self, record: AgentRecord) -> float | None:
        """Ready and Suspending: one step towards Suspended (see the module docstring)."""
        suspends = self._suspends(record)
        if suspends is None:
            return await self._drop(record, "SuspendUnsupported", "the runtime cannot suspend")
        if await self._runs(record, IN_FLIGHT):
            return RETRY_S  # the runs in flight finish first
        sandbox_id = record.status.sandboxID
        assert sandbox_id is not None
        runtime_class = record.spec.runtime.class_
        began = time.perf_counter()
        try:
            result = await suspends.suspend(sandbox_id)
        except SandboxError as err:
            if err.reason == "SuspendUnsupported":
                return await self._drop(record, err.reason, err.message)
            requested = (record.status.suspension or {}).get("requestedAt")
            waited_s = (utcnow() - parse_rfc3339(requested)).total_seconds() if requested else 0
            if waited_s < GIVE_UP_S and err.reason == "CheckpointFailed":
                log.info("suspend retried", agent=record.name, error=err.message[:500])
                return RETRY_S
            m.AGENT_SUSPENDS.labels(runtime_class, "failure", "kept").inc()
            return await self._drop(record, err.reason, err.message)
        m.SUSPEND_DURATION.labels(runtime_class).observe(time.perf_counter() - began)
        m.AGENT_SUSPENDS.labels(runtime_class, "success", m.memory_label(result.memory_kept)).inc()
        m.CHECKPOINT_BYTES.labels(runtime_class).inc(result.image_bytes)
        if result.memory_kept:
            reason, message = "Checkpointed", f"memory and files kept ({result.image_bytes} bytes)"
        else:
            reason, message = "Stopped", "files kept, memory lost (the process starts afresh)"
        await self._move(
            record,
            Phase.SUSPENDED,
            reason,
            message,
            **self._suspended_changes(
                record, reason, message, result.memory_kept, result.image_bytes
            ),
        )
        log.info("agent suspended", agent=record.name, tenant=record.tenant, reason=reason)
        return SUSPENDED_POLL_S

    def _suspended_changes(
        self, record: AgentRecord, reason: str, message: str, kept: bool, size: int
    ) -> dict[str, Any]:
        status = record.status.model_copy(
            update={
                "conditions": svc.merge_condition(
                    record.status,
                    svc.condition("Ready", "False", "Suspended", message, record.generation),
                )
            }
        )
        conditions = svc.merge_condition(
            status, svc.condition("Suspended", "True", reason, message, record.generation)
        )
        fields = {"memoryKept": kept, "imageBytes": size, "suspendedAt": rfc3339(utcnow())}
        return {
            "suspension": sus.suspension(sus.SUSPENDED, reason, record, **fields),
            "conditions": conditions,
        }

    async def _drop(self, record: AgentRecord, reason: str, message: str) -> float:
        """Give up the suspend request; the agent stays Ready, the condition says why."""
        conditions = svc.merge_condition(
            record.status, svc.condition("Suspended", "False", reason, message, record.generation)
        )
        await self._set_status(record, suspension=None, conditions=conditions)
        log.info("agent not suspended", agent=record.name, reason=reason, message=message)
        return 0

    async def suspended(self, record: AgentRecord) -> float | None:
        """Suspended: resume when a run waits for it."""
        if state(record) == sus.SUSPENDED and await self._runs(record, WAITING):
            message = "a run is waiting"
            await self._move(
                record,
                Phase.STARTING,
                "RunArrived",
                message,
                **sus.resume_changes(record, "RunArrived", message),
            )
            return 0
        return SUSPENDED_POLL_S

    async def resume(self, record: AgentRecord) -> SandboxStatus:
        """Starting and Resuming: resume the sandbox, then mark it Resumed. Raises
        SandboxError (RestoreFailed, StartFailed, NotFound)."""
        sandbox_id = record.status.sandboxID
        assert sandbox_id is not None
        suspends = self._suspends(record)
        runtime = runtime_for(self._runtimes, record)
        kept = bool((record.status.suspension or {}).get("memoryKept"))
        runtime_class = record.spec.runtime.class_
        began = time.perf_counter()
        try:
            status = await (suspends.resume(sandbox_id) if suspends else runtime.start(sandbox_id))
        except SandboxError:
            m.AGENT_RESUMES.labels(runtime_class, "failure", m.memory_label(kept)).inc()
            raise
        m.RESUME_DURATION.labels(runtime_class).observe(time.perf_counter() - began)
        m.AGENT_RESUMES.labels(runtime_class, "success", m.memory_label(kept)).inc()
        m.CHECKPOINT_BYTES.labels(runtime_class).dec(
            int((record.status.suspension or {}).get("imageBytes") or 0)
        )
        await self._set_status(record, suspension=sus.suspension("Resumed", "Resumed", record))
        return status
