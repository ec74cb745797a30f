"""Replay (architecture/replay.md): a new run of the same agent with the same input, linked
to its origin (`status.replayOf`). In `recorded` mode the origin's steps before `fromStep`
(all of them when it is absent) are served to the agent as its journal, so the SDK returns
their recorded outputs without executing them — no side effect, no model call; a step whose
call differs from the recorded one is a divergence, recorded on the replay, and from there
the replay runs live. In `live` mode everything runs again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError

from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.agents.model import Strict, field_errors, refuse_unstorable
from controlplane.domain.errors import RunNotFound, ValidationFailed
from controlplane.domain.runs.lifecycle import is_terminal
from controlplane.domain.runs.model import Divergence, ReplayOf, RunRecord
from controlplane.domain.runs.steps import CALL_ID_PATTERN, Step
from controlplane.service.runs import CreateRunResult, create_run

if TYPE_CHECKING:
    from controlplane.service.run_execution import AgentIdentity


class ReplayRequest(Strict):
    """The body of `POST .../runs/{run}/replay`."""

    mode: Literal["recorded", "live"] = "recorded"
    fromStep: int | None = Field(default=None, ge=1, le=100_000)


def _parse(body: Any, model: type[Strict], what: str) -> Any:
    refuse_unstorable(body)
    try:
        return model.model_validate(body if body is not None else {})
    except ValidationError as exc:
        errors = field_errors(exc)
        detail = "; ".join(f"{fe.pointer}: {fe.message}" for fe in errors)
        raise ValidationFailed(f"invalid {what}: {detail}", errors=errors) from None


async def replay_run(uow: UnitOfWork, tenant: str, name: str, body: Any) -> CreateRunResult:
    """A replay of run `name` (`{"mode": "recorded"|"live", "fromStep": N?}`): a new run
    of its agent with its input, timeout and labels, `status.replayOf` naming the origin.
    Raises ValidationFailed, RunNotFound, AgentNotFound (the agent is gone), AgentBusy.
    Commits."""
    request: ReplayRequest = _parse(body, ReplayRequest, "replay")
    origin = await uow.runs.get(tenant, name)
    run_body: dict[str, Any] = {
        "input": origin.spec.input,
        "timeoutSeconds": origin.spec.timeoutSeconds,
        "labels": origin.labels,
    }
    link = ReplayOf(name=origin.name, uid=origin.id, mode=request.mode, fromStep=request.fromStep)
    return await create_run(uow, tenant, origin.agent, run_body, replay_of=link)


def _cutoff(record: RunRecord) -> int | None:
    """How many of the origin's steps are served: those before `fromStep` and before the
    first divergence (None: all)."""
    link = record.status.replayOf
    assert link is not None
    limits = [link.fromStep - 1] if link.fromStep else []
    limits += [d.step - 1 for d in record.status.divergences]
    return min(limits) if limits else None


async def served_steps(uow: UnitOfWork, record: RunRecord) -> list[Step]:
    """The origin's steps a recorded replay is served as its journal (in journal order); []
    for any other run."""
    link = record.status.replayOf
    if link is None or link.mode != "recorded":
        return []
    origin = await uow.runs.journal(link.uid)
    cutoff = _cutoff(record)
    return origin if cutoff is None else origin[:cutoff]


class DivergenceReport(Strict):
    """The body of the gateway's `POST /runs/{run}/divergences`: the step (callId) and both
    calls (`type`, `name`, `input` each)."""

    callId: str = Field(pattern=CALL_ID_PATTERN)
    recorded: dict[str, Any]
    actual: dict[str, Any]
    attempt: int | None = Field(default=None, ge=1)


async def record_divergence(
    uow: UnitOfWork, who: AgentIdentity, name: str, body: Any
) -> Divergence:
    """The agent of replay `name` found step `callId` called otherwise than recorded: the
    divergence joins `status.divergences` (once per callId) and no later origin step is
    served. Raises ValidationFailed, RunNotFound (also for a run that is no replay).
    Commits."""
    report: DivergenceReport = _parse(body, DivergenceReport, "divergence")
    found = await uow.runs.find(who.tenant, name)
    record = await uow.runs.by_id(found.id, for_update=True) if found else None
    if record is None or record.agent_id != who.agent_id or record.status.replayOf is None:
        raise RunNotFound(f"replay {name!r} not found for agent {who.agent!r}")
    for known in record.status.divergences:
        if known.callId == report.callId:
            return known
    origin = await uow.runs.journal(record.status.replayOf.uid)
    position = next((i for i, s in enumerate(origin, 1) if s.callId == report.callId), 0)
    divergence = Divergence(
        step=position or len(origin) + 1,
        callId=report.callId,
        recorded=report.recorded,
        actual=report.actual,
    )
    if not is_terminal(record.phase):
        divergences = [*record.status.divergences, divergence]
        status = record.status.model_copy(update={"divergences": divergences})
        await uow.runs.set_phase(record, status)
        await uow.commit()
    return divergence
