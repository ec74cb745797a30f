"""The use cases of a sandbox's agent on its runs, as the agent gateway calls them
(architecture/runs.md, architecture/gateway-protocol.md): authenticate a sandbox credential,
claim a delivery, heartbeat, record steps and checkpoints, report the result, release.

Each function is one UnitOfWork and commits. None talks to NATS: those that end, extend or
redeliver a delivery return what to send to its ack subject, and the gateway sends it.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from controlplane.data.repositories.credentials import AgentCredential
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.agents.model import EgressRule, RunsSpec
from controlplane.domain.errors import RunFinished, RunNotFound, Unauthenticated
from controlplane.domain.events.envelope import rfc3339, utcnow
from controlplane.domain.records import AgentRecord
from controlplane.domain.runs.lifecycle import RunPhase, RunReason, is_terminal
from controlplane.domain.runs.model import ErrorInfo, RunRecord
from controlplane.domain.runs.steps import Checkpoint, Step, parse_step
from controlplane.observability import run_metrics
from controlplane.observability.run_tracing import record_step_span
from controlplane.observability.tracing import traced
from controlplane.service.approval_gate import check_step, split_gate
from controlplane.service.replay import served_steps
from controlplane.service.runs import run_event
from controlplane.service.runs import transition as move_run

CREDENTIAL_PREFIX = "aosa_"


@dataclass(frozen=True)
class AgentIdentity:
    """Who calls the gateway: one agent (`tenant`/`agent`, uid `agent_id`) from one sandbox,
    with its `spec.runs` and `spec.network.egress` as read when the credential was checked."""

    tenant: str
    agent_id: str
    agent: str
    sandbox_id: str
    credential_id: str
    runs: RunsSpec
    egress: tuple[EgressRule, ...] = ()

    @property
    def principal(self) -> str:
        """How the audit trail names this caller."""
        return f"agent:{self.tenant}/{self.agent} (sandbox {self.sandbox_id})"


def credential_hash(secret: str) -> str:
    """The stored form of a sandbox credential: the hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(secret.encode()).hexdigest()


async def issue_credentials(
    uow: UnitOfWork, sandboxes: Sequence[tuple[AgentRecord, str]]
) -> list[str]:
    """A new credential for each `(agent, sandbox id)`; every earlier credential of those
    agents is revoked (one sandbox per agent). Returns the secrets (`aosa_` + 256 random
    bits), in order, never stored. Two statements for the whole batch. Commits."""
    secrets_out: list[str] = []
    credentials: list[tuple[AgentCredential, str]] = []
    now = utcnow()
    for record, sandbox_id in sandboxes:
        secret = CREDENTIAL_PREFIX + secrets.token_urlsafe(32)
        credential = AgentCredential(
            uuid.uuid4().hex, record.tenant, record.id, record.name, sandbox_id, now, None
        )
        secrets_out.append(secret)
        credentials.append((credential, credential_hash(secret)))
    await uow.credentials.revoke_agents([record.id for record, _ in sandboxes])
    await uow.credentials.add_many(credentials)
    await uow.commit()
    return secrets_out


async def authenticate_agent(uow: UnitOfWork, secret: str | None) -> AgentIdentity:
    """The agent a sandbox credential speaks for. Raises Unauthenticated: no credential, an
    unknown or revoked one, or one whose sandbox is no longer its agent's sandbox."""
    if not secret:
        raise Unauthenticated("a sandbox credential is required (Authorization: Bearer ...)")
    credential = await uow.credentials.by_hash(credential_hash(secret))
    if credential is None or credential.revoked_at is not None:
        raise Unauthenticated("unknown or revoked sandbox credential")
    agent = await uow.agents.find(credential.tenant, credential.agent)
    if agent is None or agent.id != credential.agent_id:
        raise Unauthenticated("the agent of this credential is gone")
    if agent.status.sandboxID != credential.sandbox_id:
        raise Unauthenticated("the sandbox of this credential is no longer the agent's")
    return AgentIdentity(
        credential.tenant,
        credential.agent_id,
        credential.agent,
        credential.sandbox_id,
        credential.id,
        agent.spec.runs,
        tuple(agent.spec.network.egress),
    )


@dataclass(frozen=True)
class Claim:
    """A run handed to its agent: the run (Running), its journal and last checkpoint;
    `replayed`: the callIds of the journal served from a replay's origin (service.replay)."""

    run: RunRecord
    journal: list[Step]
    checkpoint: Checkpoint | None
    replayed: frozenset[str] = frozenset()


@traced("service.claim_run")
async def claim(
    uow: UnitOfWork, who: AgentIdentity, run_id: str, reply: str, stream_seq: int, delivered: int
) -> Claim | None:
    """Take delivery number `delivered` of run `run_id` for `who`: the run goes Running with
    `attempt = delivered` (through Dispatched: from Pending when the relay's record is still
    behind, from Running when this is a redelivery), holding the delivery's ack subject.
    Returns None when the run is terminal, gone or not this agent's: the caller acks the
    message and takes the next one. Commits."""
    record = await uow.runs.by_id(run_id, for_update=True)
    if record is None or record.agent_id != who.agent_id or is_terminal(record.phase):
        return None
    if record.phase is RunPhase.PENDING:
        record = await move_run(uow, record, RunPhase.DISPATCHED, RunReason.DISPATCHED)
    elif record.phase is RunPhase.RUNNING:
        record = await move_run(
            uow,
            record,
            RunPhase.DISPATCHED,
            RunReason.REDELIVERED,
            f"delivery {delivered}",
            attempt=delivered,
        )
    started = record.status.startedAt or rfc3339(utcnow())
    if record.phase is RunPhase.INPUT_REQUIRED:
        # Still waiting for a human: the new attempt takes the delivery and stays waiting
        # (its handler asks again for the same step and gets the same approval).
        status = record.status.model_copy(update={"attempt": delivered})
        record = await uow.runs.set_phase(record, status)
        return await _hand_over(uow, record, reply, stream_seq, delivered)
    record = await move_run(
        uow,
        record,
        RunPhase.RUNNING,
        RunReason.STARTED,
        f"attempt {delivered} in sandbox {who.sandbox_id}",
        attempt=delivered,
        startedAt=started,
    )
    return await _hand_over(uow, record, reply, stream_seq, delivered)


async def _hand_over(
    uow: UnitOfWork, record: RunRecord, reply: str, stream_seq: int, delivered: int
) -> Claim:
    """Hold the delivery of a claimed run and read what earlier attempts left. Commits."""
    await uow.deliveries.hold(record.id, reply, stream_seq)
    # A first delivery has no journal and no checkpoint yet: two reads saved per run.
    journal = await uow.runs.journal(record.id) if delivered > 1 else []
    checkpoint = await uow.runs.load_checkpoint(record.id) if delivered > 1 else None
    own = {s.callId for s in journal}
    served = [s for s in await served_steps(uow, record) if s.callId not in own]
    await uow.commit()
    return Claim(record, served + journal, checkpoint, frozenset(s.callId for s in served))


async def _own_run(
    uow: UnitOfWork, who: AgentIdentity, name: str, attempt: int | None = None
) -> RunRecord:
    """The run `name` of `who`'s agent, locked for this transaction. Raises RunNotFound
    (another agent's run is not found either: a credential reveals nothing of other
    agents), and RunFinished when `attempt` is given and is not the run's current attempt:
    a holder whose delivery was taken over is fenced off."""
    found = await uow.runs.find(who.tenant, name)
    record = await uow.runs.by_id(found.id, for_update=True) if found else None
    if record is None or record.agent_id != who.agent_id:
        raise RunNotFound(f"run {name!r} not found for agent {who.agent!r}")
    if attempt is not None and attempt != record.status.attempt and not is_terminal(record.phase):
        raise RunFinished(
            f"attempt {attempt} of run {name!r} was superseded by attempt {record.status.attempt}"
        )
    return record


def _live(record: RunRecord) -> RunRecord:
    if is_terminal(record.phase):
        raise RunFinished(f"run {record.name!r} is {record.phase}")
    return record


def _observe_step(run_id: str, step: Step) -> None:
    """A step recorded: its GenAI metrics and its span under the run's trace."""
    run_metrics.observe_step(step)
    record_step_span(run_id, None, step)


@dataclass(frozen=True)
class Beat:
    """A heartbeat's answer; `reply` is the delivery to extend (None: none held)."""

    cancel_requested: bool
    deadline: str
    reply: str | None


async def heartbeat(
    uow: UnitOfWork, who: AgentIdentity, name: str, attempt: int | None = None
) -> Beat:
    """The agent is working on run `name` (delivery `attempt`). A canceled run answers
    `cancel_requested`; any other terminal run, or a superseded attempt, raises RunFinished.
    Raises RunNotFound. Commits."""
    record = await _own_run(uow, who, name, attempt)
    if record.phase is RunPhase.CANCELED:
        return Beat(True, rfc3339(record.deadline), None)
    _live(record)
    held = await uow.deliveries.held(record.id)
    await uow.deliveries.heartbeat(record.id)
    await uow.commit()
    return Beat(False, rfc3339(record.deadline), held.reply if held else None)


async def record_step(
    uow: UnitOfWork, who: AgentIdentity, name: str, body: Any
) -> tuple[Step, bool]:
    """Journal a finished step of run `name` (idempotent by `callId`: the first report wins
    and is returned); a new step adds its usage to the run's and writes
    `run.step_recorded`. A tool step that `spec.runs.approval` gates needs its approved
    approval (`approvalId`, service.approval_gate). Raises ValidationFailed (naming the
    field), RunNotFound, RunFinished, ApprovalRequired. Commits."""
    body, approval_id, destructive = split_gate(body)
    step = parse_step(body)
    record = _live(await _own_run(uow, who, name, step.attempt))
    await check_step(uow, who.runs.approval, record, step, approval_id, destructive)
    journaled, written = await uow.runs.record_step(record.id, step)
    if written:
        uow.after_commit(lambda: _observe_step(record.id, step))
        usage = record.status.usage + step.usage
        await uow.runs.set_phase(record, record.status.model_copy(update={"usage": usage}))
        await uow.outbox.add(
            run_event(
                record,
                "run.step_recorded",
                {"name": record.name, "agent": record.agent, "step": step.model_dump(mode="json")},
            )
        )
    await uow.commit()
    return journaled, written


async def checkpoint(
    uow: UnitOfWork,
    who: AgentIdentity,
    name: str,
    state: Any,
    call_id: str | None,
    attempt: int | None = None,
) -> None:
    """Save `state` as run `name`'s checkpoint (the next attempt starts from it). Raises
    RunNotFound, RunFinished. Commits."""
    record = _live(await _own_run(uow, who, name, attempt))
    await uow.runs.save_checkpoint(record.id, state, record.status.attempt)
    await uow.outbox.add(
        run_event(
            record,
            "run.checkpointed",
            {
                "name": record.name,
                "agent": record.agent,
                "attempt": record.status.attempt,
                "callId": call_id,
            },
        )
    )
    await uow.commit()


@dataclass(frozen=True)
class Settle:
    """What to send to the delivery's ack subject (`reply`, None: nothing held)."""

    action: Literal["ack", "nak", "term", "none"]
    reply: str | None
    delay_s: float = 0.0


async def finish(
    uow: UnitOfWork,
    who: AgentIdentity,
    name: str,
    *,
    output: Any = None,
    error: ErrorInfo | None = None,
    max_attempts: int,
    retry_delay_s: float = 1.0,
    attempt: int | None = None,
) -> Settle:
    """The handler of run `name` returned `output` or raised `error`. Success: Succeeded,
    ack. An error before `max_attempts` deliveries: back to Dispatched, nak after
    `retry_delay_s` (the next delivery is attempt + 1); at `max_attempts`: Failed with reason
    HandlerError, the message terminated and dead-lettered. A repeat of the result
    that ended the run answers `none`. Raises RunNotFound, RunFinished (also for a
    superseded `attempt`). Commits."""
    record = await _own_run(uow, who, name, attempt)
    if is_terminal(record.phase):
        if record.phase in (RunPhase.SUCCEEDED, RunPhase.FAILED) and record.status.attempt:
            return Settle("none", None)
        raise RunFinished(f"run {record.name!r} is {record.phase}")
    held = await uow.deliveries.held(record.id)
    reply = held.reply if held else None
    await uow.deliveries.release(record.id)
    if record.phase is RunPhase.INPUT_REQUIRED:
        # The handler ended without waiting for its decision: it is no longer waiting.
        record = await move_run(
            uow, record, RunPhase.RUNNING, RunReason.STARTED, "ended while waiting for approval"
        )
    if error is None:
        await move_run(uow, record, RunPhase.SUCCEEDED, RunReason.COMPLETED, output=output)
        settle = Settle("ack", reply)
    elif record.status.attempt < max_attempts:
        await move_run(
            uow,
            record,
            RunPhase.DISPATCHED,
            RunReason.REDELIVERED,
            f"attempt {record.status.attempt} failed: {error.type}: {error.message}"[:1000],
            error=error,
            attempt=record.status.attempt + 1,
        )
        settle = Settle("nak", reply, retry_delay_s * 2 ** (record.status.attempt - 1))
    else:
        # The handler's own failure on its last attempt: HandlerError, not the platform's
        # DeliveryExhausted (architecture/slos.md: run delivery success).
        message = f"{record.status.attempt} attempts; last: {error.type}: {error.message}"
        await move_run(
            uow,
            record,
            RunPhase.FAILED,
            RunReason.HANDLER_ERROR,
            message[:1000],
            error=error,
        )
        await uow.deliveries.dead_letter(record.id, message, f"runs:{who.agent}")
        settle = Settle("term", reply)
    await uow.commit()
    return settle


async def release(
    uow: UnitOfWork, who: AgentIdentity, name: str, attempt: int | None = None
) -> Settle:
    """The agent gives run `name` back unfinished (it is stopping): back to Dispatched, to be
    delivered again at once. Raises RunNotFound, RunFinished (a superseded attempt).
    Commits."""
    record = await _own_run(uow, who, name, attempt)
    held = await uow.deliveries.held(record.id)
    if record.phase is RunPhase.INPUT_REQUIRED and held is not None:
        # A run waiting for a human stays waiting; only its delivery goes back.
        await uow.deliveries.release(record.id)
        await uow.commit()
        return Settle("nak", held.reply)
    if record.phase is not RunPhase.RUNNING or held is None:
        return Settle("none", None)
    await uow.deliveries.release(record.id)
    await move_run(
        uow,
        record,
        RunPhase.DISPATCHED,
        RunReason.REDELIVERED,
        "released by its agent",
        attempt=record.status.attempt + 1,
    )
    await uow.commit()
    return Settle("nak", held.reply)
