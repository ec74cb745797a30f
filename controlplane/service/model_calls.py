"""The use cases of the agent gateway's model proxy (architecture/model-gateway.md): which
run a model call is attributed to, whether the tenant's budget admits it, and how it is
recorded — an `llm` step of the run, its usage rolled up into the run and the tenant's
budget window.

Each function is one UnitOfWork. The upstream call itself is the gateway's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.errors import RunFinished, RunNotFound, RunNotRunning
from controlplane.domain.providers.model import ProviderRecord
from controlplane.domain.runs.lifecycle import RunPhase, is_terminal
from controlplane.domain.runs.model import Usage
from controlplane.domain.runs.steps import Step
from controlplane.observability import run_metrics
from controlplane.observability.run_tracing import record_step_span
from controlplane.service.run_execution import AgentIdentity
from controlplane.service.runs import run_event


@dataclass(frozen=True)
class RunRef:
    """The run a model call is attributed to: its uid, name and current attempt."""

    run_id: str
    name: str
    attempt: int


async def attribute(
    uow: UnitOfWork, who: AgentIdentity, run: str | None, attempt: int | None
) -> RunRef:
    """The Running run of `who`'s agent that a model call speaks for: `run` when given
    (header `AgentOS-Run`), else the agent's only Running run.

    Raises RunNotFound (`run` is not this agent's: another agent's run is not found either),
    RunFinished (`attempt` given and superseded), RunNotRunning (`run` is not Running, or
    the agent has no Running run, or several and the call named none)."""
    if run is None:
        names = await uow.runs.running_names(who.agent_id, limit=2)
        if not names:
            raise RunNotRunning(
                f"agent {who.agent!r} has no running run to attribute the model call to"
            )
        if len(names) > 1:
            raise RunNotRunning(
                f"agent {who.agent!r} has several running runs: name one in AgentOS-Run"
            )
        run = names[0]
    record = await uow.runs.find(who.tenant, run)
    if record is None or record.agent_id != who.agent_id:
        raise RunNotFound(f"run {run!r} not found for agent {who.agent!r}")
    if attempt is not None and attempt != record.status.attempt and not is_terminal(record.phase):
        raise RunFinished(
            f"attempt {attempt} of run {run!r} was superseded by attempt {record.status.attempt}"
        )
    if record.phase is not RunPhase.RUNNING:
        raise RunNotRunning(f"run {run!r} is {record.phase}, not Running")
    return RunRef(record.id, record.name, record.status.attempt)


async def providers(uow: UnitOfWork, tenant: str) -> list[ProviderRecord]:
    """Every model provider of `tenant`, by name."""
    return await uow.models.list(tenant)


async def window_tokens(uow: UnitOfWork, tenant: str, provider: str, window_start: int) -> int:
    """Input + output tokens `tenant` used on `provider` in the window at `window_start`."""
    return await uow.models.window_tokens(tenant, provider, window_start)


@dataclass(frozen=True)
class Metered:
    """One proxied call to record: its run, its `llm` step, the provider and budget window
    it counts in, and its GenAI operation (`chat`, `embeddings`)."""

    run: RunRef
    step: Step
    provider: str
    window_start: int
    operation: str


async def record_calls(uow: UnitOfWork, calls: list[Metered]) -> int:
    """Journal proxied model calls, in one transaction: each `step` (type `llm`, idempotent
    by `callId`) in its run — terminal or not: the tokens were spent — the run's usage
    increased by the steps written, one `run.step_recorded` each, and every call's usage
    counted in its tenant's budget window. After commit, the GenAI metrics and each step's
    span. Returns how many steps were written (a run gone or a callId already journaled
    counts in the budget window only). Commits."""
    by_run: dict[str, list[Metered]] = {}
    windows: dict[tuple[str, str, int], tuple[Usage, int]] = {}
    for call in calls:
        by_run.setdefault(call.run.run_id, []).append(call)
    written = 0
    for run_id in sorted(by_run):  # one lock order for every writer
        record = await uow.runs.by_id(run_id, for_update=True)
        if record is None:
            continue
        added = Usage()
        for call in by_run[run_id]:
            key = (record.tenant, call.provider, call.window_start)
            used, count = windows.get(key, (Usage(), 0))
            windows[key] = (used + call.step.usage, count + 1)
            if not (await uow.runs.record_step(record.id, call.step))[1]:
                continue
            written += 1
            added = added + call.step.usage
            payload = {
                "name": record.name,
                "agent": record.agent,
                "step": call.step.model_dump(mode="json"),
            }
            await uow.outbox.add(run_event(record, "run.step_recorded", payload))
            uow.after_commit(_observer(record.id, call))
        usage = record.status.usage + added
        await uow.runs.set_phase(record, record.status.model_copy(update={"usage": usage}))
    for (tenant, provider, window_start), (usage, count) in windows.items():
        await uow.models.add_usage(tenant, provider, window_start, usage, requests=count)
    await uow.commit()
    return written


def _observer(run_id: str, call: Metered) -> Callable[[], None]:
    return lambda: _observe(run_id, call.step, call.operation)


def _observe(run_id: str, step: Step, operation: str) -> None:
    run_metrics.step_recorded(
        "llm",
        operation,
        step.name,
        step.usage.inputTokens,
        step.usage.outputTokens,
        run_metrics.step_duration_s(step),
        failed=step.status == "failed",
    )
    record_step_span(run_id, None, step, operation=operation)
