"""The use cases of the agent gateway's model proxy (architecture/model-gateway.md): which
run a model call is attributed to, whether the tenant's budget admits it, and how it is
recorded — an `llm` step of the run, its usage rolled up into the run and the tenant's
budget window.

Each function is one UnitOfWork. The upstream call itself is the gateway's.
"""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.errors import RunFinished, RunNotFound, RunNotRunning
from controlplane.domain.providers.model import ProviderRecord
from controlplane.domain.runs.lifecycle import RunPhase, is_terminal
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


async def record_call(
    uow: UnitOfWork,
    run: RunRef,
    step: Step,
    provider: str,
    window_start: int,
    operation: str,
) -> bool:
    """Journal a proxied model call as `step` (type `llm`, idempotent by `callId`) of
    `run` — terminal or not: the tokens were spent — add its usage to the run's, and count
    it in the tenant's budget window of `provider`; writes `run.step_recorded`. After
    commit, the GenAI metrics (`operation`: `chat` or `embeddings`) and the step's span.
    Returns False when the run is gone or the callId was already journaled (the usage is
    then counted in the budget window only). Commits."""
    record = await uow.runs.by_id(run.run_id, for_update=True)
    if record is None:
        return False
    await uow.models.add_usage(record.tenant, provider, window_start, step.usage)
    _, written = await uow.runs.record_step(record.id, step)
    if written:
        usage = record.status.usage + step.usage
        await uow.runs.set_phase(record, record.status.model_copy(update={"usage": usage}))
        payload = {"name": record.name, "agent": record.agent, "step": step.model_dump(mode="json")}
        await uow.outbox.add(run_event(record, "run.step_recorded", payload))
        uow.after_commit(lambda: _observe(record.id, step, operation))
    await uow.commit()
    return written


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
