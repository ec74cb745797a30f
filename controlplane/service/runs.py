"""Use cases on runs as users see them: create (with admission and idempotency), read, list,
cancel, the step journal and the run's events (architecture/runs.md).

Every change is one UnitOfWork: the run row, its outbox events and an audit entry commit
together or not at all. Delivery to the agent (the gateway, the run controller) is
`service.run_execution`'s.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from controlplane.data.repositories.runs import RunCursor
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.errors import (
    AgentBusy,
    AgentNotFound,
    BadRequest,
    FieldError,
    RunFinished,
)
from controlplane.domain.events.envelope import NewEvent, parse_rfc3339, rfc3339, utcnow
from controlplane.domain.records import AgentRecord, StoredEvent
from controlplane.domain.runs.lifecycle import (
    NON_TERMINAL,
    TERMINAL,
    RunPhase,
    RunReason,
    check_transition,
    is_terminal,
)
from controlplane.domain.runs.model import (
    ReplayOf,
    RunRecord,
    RunSpec,
    RunStatus,
    parse_run_create,
)
from controlplane.domain.runs.steps import Step
from controlplane.domain.selectors import parse_selector
from controlplane.observability import run_metrics, tracing
from controlplane.observability.run_tracing import record_run_span
from controlplane.observability.tracing import traced
from controlplane.service.idempotency import IdempotencyRequest
from controlplane.service.idempotency import begin as idempotency_begin
from controlplane.service.idempotency import remember as idempotency_remember
from controlplane.service.listing import (
    DEFAULT_LIMIT,
    UnitOfWorkFactory,
    decode_continue,
    encode_continue,
)

AGGREGATE = "run"
DISPATCH = "run.dispatch"  # the queue message: internal, never shown to users
QUEUED = (RunPhase.PENDING, RunPhase.DISPATCHED)
# The event written when a run enters a phase (controlplane/domain/events/schemas/run.*).
PHASE_EVENTS: dict[RunPhase, str] = {
    RunPhase.DISPATCHED: "run.dispatched",
    RunPhase.RUNNING: "run.started",
    RunPhase.INPUT_REQUIRED: "run.input_required",
    RunPhase.SUCCEEDED: "run.succeeded",
    RunPhase.FAILED: "run.failed",
    RunPhase.CANCELED: "run.canceled",
    RunPhase.TIMED_OUT: "run.timed_out",
}
TERMINAL_EVENTS = frozenset(PHASE_EVENTS[p] for p in TERMINAL)


def resource_of(record: RunRecord) -> str:
    """The run as the audit trail names it."""
    return f"tenants/{record.tenant}/agents/{record.agent}/runs/{record.name}"


def run_event(record: RunRecord, event_type: str, payload: dict[str, Any]) -> NewEvent:
    """An outbox event of the run: aggregate `run` / its id, `agent_id` the agent's uid."""
    return NewEvent(
        event_type=event_type,
        aggregate_type=AGGREGATE,
        aggregate_id=record.id,
        tenant_id=record.tenant,
        agent_id=record.agent_id,
        payload=payload,
    )


@dataclass(frozen=True)
class CreateRunResult:
    """The response of a create: the Run object, the record (None when `replayed`, the
    first response to the same idempotency key: nothing changed)."""

    body: dict[str, Any]
    record: RunRecord | None
    replayed: bool


async def _admit(uow: UnitOfWork, agent: AgentRecord) -> None:
    """Admission (architecture/runs.md): raise AgentBusy when `queue: reject` and every slot
    is busy, or when `maxQueued` runs already wait (either mode)."""
    runs = agent.spec.runs
    if runs.queue == "reject":
        busy = await uow.runs.count(agent.id, NON_TERMINAL)
        if busy >= runs.concurrency:
            raise AgentBusy(
                f"agent {agent.name!r} runs {busy} of {runs.concurrency} runs at once "
                "and its queue is `reject`"
            )
    waiting = await uow.runs.count(agent.id, QUEUED)
    if waiting >= runs.maxQueued:
        raise AgentBusy(f"agent {agent.name!r} already has {waiting} runs waiting (maxQueued)")


async def _live_agent(uow: UnitOfWork, tenant: str, name: str) -> AgentRecord:
    found = await uow.agents.find(tenant, name)
    if found is None or found.deletion_requested_at is not None:
        raise AgentNotFound(f"agent {name!r} not found in tenant {tenant!r}")
    # Concurrent creates for one agent are admitted one at a time (PostgreSQL row lock).
    locked = await uow.agents.by_id(found.id, for_update=True)
    if locked is None:
        raise AgentNotFound(f"agent {name!r} not found in tenant {tenant!r}")
    return locked


@traced("service.create_run")
async def create_run(
    uow: UnitOfWork,
    tenant: str,
    agent_name: str,
    body: Any,
    *,
    idempotency: IdempotencyRequest | None = None,
    replay_of: ReplayOf | None = None,
) -> CreateRunResult:
    """Create a run of agent `agent_name` in `tenant` from `body` (`{"input": ...,
    "timeoutSeconds"?, "labels"?}`), in phase Pending with attempt 0, with its events
    `run.created` and `run.dispatch` (the queue message) and an audit entry. Commits.
    `replay_of`: the run replays another (service.replay; `status.replayOf`).

    Raises ValidationFailed / BadRequest (the body, each field named), AgentNotFound (no
    such agent, or one being deleted), AgentBusy (admission), IdempotencyKeyInUse,
    IdempotencyKeyReused. Nothing is written when it raises.
    """
    request = parse_run_create(body)
    if idempotency is not None:
        stored = await idempotency_begin(uow, idempotency)
        if stored is not None:
            await uow.commit()
            return CreateRunResult(stored.body, None, replayed=True)
    agent = await _live_agent(uow, tenant, agent_name)
    await _admit(uow, agent)
    record = RunRecord(
        id=str(uuid.uuid4()),
        tenant=tenant,
        agent_id=agent.id,
        agent=agent.name,
        name=f"run-{uuid.uuid4().hex[:12]}",
        labels=request.labels,
        spec=RunSpec(
            input=request.input,
            timeoutSeconds=request.timeoutSeconds or agent.spec.runs.timeoutSeconds,
        ),
        status=RunStatus(
            phase=RunPhase.PENDING,
            reason=RunReason.CREATED,
            message="accepted",
            replayOf=replay_of,
        ),
        resource_version=1,
        created_at=utcnow(),
    )
    await uow.runs.add(record)
    run = record.to_object()
    created, dispatch = await uow.outbox.add_many(
        [
            run_event(
                record, "run.created", {"name": record.name, "agent": agent.name, "run": run}
            ),
            run_event(
                record,
                DISPATCH,
                {
                    "run_id": record.id,
                    "name": record.name,
                    "agent": agent.name,
                    "traceparent": tracing.current_traceparent(),
                },
            ),
        ]
    )
    await uow.runs.set_dispatch_event(record.id, dispatch.event_id)
    if request.notify is not None:  # the secret is stored here only, never in the Run
        await uow.notifications.add(record.id, tenant, request.notify.url, request.notify.secret)
    await uow.audit.record(
        "run.create",
        resource_of(record),
        tenant=tenant,
        event_id=created.event_id,
        details={"agent": agent.name, "run": record.name},
    )
    if idempotency is not None:
        await idempotency_remember(uow, idempotency, 201, run)
    await uow.commit()
    return CreateRunResult(run, record, replayed=False)


@traced("service.get_run")
async def get_run(
    uow: UnitOfWork, tenant: str, name: str, *, agent: str | None = None
) -> RunRecord:
    """The run `name` of `tenant` (of agent `agent` when given). Raises RunNotFound."""
    return await uow.runs.get(tenant, name, agent=agent)


@dataclass(frozen=True)
class RunPage:
    """One page of runs, newest first, and the token of the next (None on the last)."""

    items: list[RunRecord]
    continue_token: str | None


def parse_phases(phases: Sequence[str]) -> list[RunPhase]:
    """Phase names (`Running`, ...; a comma-separated item counts as several). Raises
    BadRequest naming the parameter `phase`."""
    wanted: list[RunPhase] = []
    for item in phases:
        for name in filter(None, (p.strip() for p in item.split(","))):
            try:
                wanted.append(RunPhase(name))
            except ValueError:
                known = ", ".join(p.value for p in RunPhase)
                raise BadRequest(
                    f"phase: {name!r} is not a run phase (one of {known})",
                    errors=[FieldError("phase", f"one of {known}")],
                ) from None
    return wanted


def _decode_cursor(token: str | None) -> RunCursor | None:
    after = decode_continue(token)
    if after is None:
        return None
    created, _, run_id = after.partition(" ")
    try:
        return RunCursor(parse_rfc3339(created), run_id)
    except ValueError:
        raise BadRequest("continue: not a token issued by this API") from None


@traced("service.list_runs")
async def list_runs(
    uow: UnitOfWork,
    tenant: str,
    *,
    agent: str | None = None,
    phases: Sequence[str] = (),
    label_selector: str | None = None,
    limit: int = DEFAULT_LIMIT,
    continue_token: str | None = None,
) -> RunPage:
    """A page of the runs of `tenant` (of `agent` when given), newest first, in one of
    `phases` when any is given, whose labels match `label_selector` (Kubernetes syntax).
    Keyset pages (Kubernetes `limit` + `continue`): a run present for the whole pagination
    is listed exactly once. Raises BadRequest (selector, phase, continue token)."""
    requirements = parse_selector(label_selector)
    wanted = parse_phases(phases)
    items = await uow.runs.page(
        tenant,
        limit=limit + 1,
        after=_decode_cursor(continue_token),
        agent=agent,
        phases=wanted,
        requirements=requirements,
    )
    more = len(items) > limit
    items = items[:limit]
    token = None
    if more:
        last = items[-1]
        token = encode_continue(f"{rfc3339(last.created_at)} {last.id}")
    return RunPage(items, token)


def phase_payload(before: RunRecord, after: RunRecord, reason: str, message: str) -> dict[str, Any]:
    """The payload of a phase event (`run.dispatched` ... `run.timed_out`)."""
    return {
        "name": after.name,
        "agent": after.agent,
        "from_phase": str(before.phase),
        "to_phase": str(after.phase),
        "reason": reason,
        "message": message,
        "attempt": after.status.attempt,
        "run": after.to_object(),
    }


def _observe_end(record: RunRecord) -> None:
    """A run ended: its metrics and its `invoke_agent` span."""
    run_metrics.observe_run_finished(record)
    record_run_span(record, None)


async def transition(
    uow: UnitOfWork,
    record: RunRecord,
    to_phase: RunPhase,
    reason: str,
    message: str = "",
    *,
    audit_action: str = "run.transition",
    **status_changes: Any,
) -> RunRecord:
    """Move `record` to `to_phase` (checked against the run lifecycle), with status
    changes, its phase event and an audit entry; returns the run as stored.
    `finishedAt` is stamped when the phase is terminal. Raises IllegalTransition, Conflict
    (stale record). Does not commit."""
    check_transition(record.phase, to_phase)
    changes: dict[str, Any] = {"phase": to_phase, "reason": reason, "message": message}
    if is_terminal(to_phase):
        changes["finishedAt"] = rfc3339(utcnow())
    status = record.status.model_copy(update={**changes, **status_changes})
    saved = await uow.runs.set_phase(record, status)
    event = await uow.outbox.add(
        run_event(saved, PHASE_EVENTS[to_phase], phase_payload(record, saved, reason, message))
    )
    if is_terminal(to_phase):
        uow.after_commit(lambda: _observe_end(saved))
    elif record.phase is RunPhase.RUNNING and to_phase is RunPhase.DISPATCHED:
        uow.after_commit(run_metrics.run_redelivered)
    await uow.audit.record(
        audit_action,
        resource_of(saved),
        tenant=saved.tenant,
        event_id=event.event_id,
        details={"from": str(record.phase), "to": str(to_phase), "reason": reason},
    )
    return saved


@traced("service.cancel_run")
async def cancel_run(
    uow: UnitOfWork, tenant: str, name: str, *, agent: str | None = None
) -> RunRecord:
    """Cancel a run that has not ended: Canceled with reason CanceledByUser and a
    `run.canceled` event; the run controller then ends its delivery. Commits.

    Raises RunNotFound, RunFinished (it already ended: Succeeded, Failed, Canceled or
    TimedOut).
    """
    found = await uow.runs.get(tenant, name, agent=agent)
    record = await uow.runs.by_id(found.id, for_update=True) or found
    if is_terminal(record.phase):
        raise RunFinished(f"run {name!r} already ended ({record.phase})")
    saved = await transition(
        uow,
        record,
        RunPhase.CANCELED,
        RunReason.CANCELED_BY_USER,
        f"canceled by {uow.principal}",
        audit_action="run.cancel",
    )
    await uow.commit()
    return saved


@traced("service.list_steps")
async def list_steps(
    uow: UnitOfWork, tenant: str, name: str, *, agent: str | None = None
) -> list[Step]:
    """The run's journal: every step in the order it was recorded. Raises RunNotFound."""
    record = await uow.runs.get(tenant, name, agent=agent)
    return await uow.runs.journal(record.id)


@traced("service.run_events")
async def run_events(
    uow: UnitOfWork,
    tenant: str,
    name: str,
    *,
    agent: str | None = None,
    after_sequence: int = 0,
    limit: int = 1000,
) -> tuple[RunRecord, list[StoredEvent]]:
    """The run as it is now and its events with a per-run sequence above `after_sequence`,
    oldest first, at most `limit`; the internal `run.dispatch` is never among them. Raises
    RunNotFound."""
    record = await uow.runs.get(tenant, name, agent=agent)
    events = await uow.events.of_aggregate(
        AGGREGATE, record.id, after_sequence=after_sequence, limit=limit, exclude_types=[DISPATCH]
    )
    return record, events


@dataclass(frozen=True)
class RunEvent:
    """One event of a run as a follower sees it: `sequence` (resume after it), `type` (the
    event type), `data` the JSON object sent (`type`, `sequence`, `occurredAt`, `run` — the
    Run object the event recorded, or only its identity (`metadata`: name, uid, tenant,
    agent) for an event that records none, a step's say — and the event's own fields:
    `step`, `fromPhase`, `toPhase`, `reason`, ...). The same event always reads the same."""

    sequence: int
    type: str
    data: dict[str, Any]

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS


def _identity(record: RunRecord) -> dict[str, Any]:
    metadata = record.to_object()["metadata"]
    return {"metadata": {k: metadata[k] for k in ("name", "uid", "tenant", "agent")}}


_RENAMED = {"from_phase": "fromPhase", "to_phase": "toPhase"}


def follower_event(record: RunRecord, event: StoredEvent) -> RunEvent:
    """The RunEvent of a stored event of `record`."""
    payload = dict(event.payload)
    data: dict[str, Any] = {
        "type": event.event_type,
        "sequence": event.sequence,
        "occurredAt": rfc3339(event.occurred_at),
        "run": payload.pop("run", None) or _identity(record),
    }
    payload.pop("name", None)
    payload.pop("agent", None)
    data.update({_RENAMED.get(k, k): v for k, v in payload.items()})
    return RunEvent(event.sequence, event.event_type, data)


async def follow_run_events(
    uow_factory: UnitOfWorkFactory,
    tenant: str,
    name: str,
    *,
    agent: str | None = None,
    after_sequence: int = 0,
    wait: Callable[[], Awaitable[bool]],
) -> AsyncIterator[RunEvent | None]:
    """The run's events after `after_sequence`, then each new one as it is written, until
    the terminal one (`run.succeeded`, `.failed`, `.canceled`, `.timed_out`), in sequence
    order, each once: a follower that resumes after the last sequence it got misses
    nothing. When there is nothing new, `wait()` is awaited (a poll interval) and None is
    yielded (a tick: time for a keep-alive); `wait()` returns False to stop (the follower's
    time is up). Raises RunNotFound."""
    cursor = after_sequence
    while True:
        async with uow_factory() as uow:
            # The run first: if it has ended, its terminal event is committed and visible.
            record, events = await run_events(uow, tenant, name, agent=agent, after_sequence=cursor)
        for event in events:
            out = follower_event(record, event)
            yield out
            cursor = event.sequence
            if out.terminal:
                return
        if events:
            continue
        if is_terminal(record.phase) or not await wait():
            return
        yield None
