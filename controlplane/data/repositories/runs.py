"""RunRepository: runs, their step journal and checkpoints, on the UnitOfWork's transaction.

The same on PostgreSQL and SQLite. Writes of a run check `resource_version` (optimistic
concurrency, as agents); the journal keeps one row per (run, callId), first write wins.
Whether a phase change is legal is the domain's rule (controlplane/domain/runs/lifecycle.py),
checked by the caller before `set_phase`.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from controlplane.data.repositories.labels import label_condition
from controlplane.data.tables import run_checkpoints, run_steps, runs
from controlplane.domain.errors import AlreadyExists, Conflict, RunNotFound
from controlplane.domain.events.envelope import as_utc, utcnow
from controlplane.domain.runs.lifecycle import RunPhase
from controlplane.domain.runs.model import RunRecord, RunSpec, RunStatus
from controlplane.domain.runs.steps import Checkpoint, Step
from controlplane.domain.selectors import Requirement


@dataclass(frozen=True)
class RunCursor:
    """Where a page of runs ended: lists go newest first, by (creation time, id)."""

    created_at: datetime
    id: str

    @classmethod
    def after(cls, record: RunRecord) -> RunCursor:
        return cls(record.created_at, record.id)


def to_record(row: Any) -> RunRecord:
    return RunRecord(
        id=row.id,
        tenant=row.tenant,
        agent_id=row.agent_id,
        agent=row.agent,
        name=row.name,
        labels=dict(row.labels),
        spec=RunSpec.model_validate(row.spec),
        status=RunStatus.model_validate(row.status),
        resource_version=row.resource_version,
        created_at=as_utc(row.created_at),
    )


def _derived(status: RunStatus) -> dict[str, Any]:
    """The columns derived from a status (see tables.runs)."""
    return {
        "status": status.model_dump(mode="json"),
        "phase": status.phase,
        "attempt": status.attempt,
    }


def _upsert(conn: AsyncConnection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


class RunRepository:
    """Runs of every tenant."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, record: RunRecord) -> None:
        """Insert a new run (its `resource_version` as given, normally 1). Raises
        AlreadyExists when the tenant already has a run of that name."""
        try:
            await self._conn.execute(
                insert(runs).values(
                    id=record.id,
                    tenant=record.tenant,
                    agent_id=record.agent_id,
                    agent=record.agent,
                    name=record.name,
                    labels=record.labels,
                    spec=record.spec.model_dump(mode="json"),
                    resource_version=record.resource_version,
                    created_at=record.created_at,
                    updated_at=record.created_at,
                    deadline_at=record.deadline,
                    **_derived(record.status),
                )
            )
        except IntegrityError:
            raise AlreadyExists(
                f"run {record.name!r} already exists in tenant {record.tenant!r}"
            ) from None

    async def set_dispatch_event(self, run_id: str, event_id: str) -> None:
        """Remember the outbox event of the run's dispatch message (`runs.dispatch_event_id`):
        the run controller moves the run to Dispatched once that event is Published."""
        await self._conn.execute(
            update(runs).where(runs.c.id == run_id).values(dispatch_event_id=event_id)
        )

    async def find(self, tenant: str, name: str, *, agent: str | None = None) -> RunRecord | None:
        """The run `name` of `tenant` (and of `agent`, when given), or None."""
        query = select(runs).where(runs.c.tenant == tenant, runs.c.name == name)
        if agent is not None:
            query = query.where(runs.c.agent == agent)
        row = (await self._conn.execute(query)).first()
        return to_record(row) if row else None

    async def get(self, tenant: str, name: str, *, agent: str | None = None) -> RunRecord:
        """Like `find`. Raises RunNotFound."""
        found = await self.find(tenant, name, agent=agent)
        if found is None:
            where = f"agent {agent!r} of tenant {tenant!r}" if agent else f"tenant {tenant!r}"
            raise RunNotFound(f"run {name!r} not found for {where}")
        return found

    async def by_id(self, run_id: str, *, for_update: bool = False) -> RunRecord | None:
        query = select(runs).where(runs.c.id == run_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._conn.execute(query)).first()
        return to_record(row) if row else None

    async def page(
        self,
        tenant: str,
        *,
        limit: int,
        after: RunCursor | None = None,
        agent: str | None = None,
        phases: Iterable[RunPhase] = (),
        requirements: Sequence[Requirement] = (),
    ) -> builtins.list[RunRecord]:
        """Up to `limit` runs of `tenant`, newest first, after `after` (keyset pagination:
        stable under concurrent writes), of `agent` (a name) when given, in one of `phases`
        when any is given, whose labels satisfy `requirements`."""
        query = select(runs).where(
            runs.c.tenant == tenant,
            label_condition(
                runs.c.labels, requirements, postgres=self._conn.dialect.name == "postgresql"
            ),
        )
        if agent is not None:
            query = query.where(runs.c.agent == agent)
        wanted = [str(p) for p in phases]
        if wanted:
            query = query.where(runs.c.phase.in_(wanted))
        if after is not None:
            query = query.where(
                or_(
                    runs.c.created_at < after.created_at,
                    and_(runs.c.created_at == after.created_at, runs.c.id < after.id),
                )
            )
        query = query.order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit)
        return [to_record(r) for r in await self._conn.execute(query)]

    async def count(self, agent_id: str, phases: Iterable[RunPhase]) -> int:
        """How many runs of the agent (by uid) are in `phases` (slots busy, runs queued)."""
        query = select(func.count()).where(
            runs.c.agent_id == agent_id, runs.c.phase.in_([str(p) for p in phases])
        )
        return int((await self._conn.execute(query)).scalar_one())

    async def running_names(self, agent_id: str, limit: int = 2) -> builtins.list[str]:
        """Names of up to `limit` Running runs of the agent (by uid): the runs a model call
        may be attributed to when it names none."""
        query = (
            select(runs.c.name)
            .where(runs.c.agent_id == agent_id, runs.c.phase == str(RunPhase.RUNNING))
            .limit(limit)
        )
        return [row.name for row in await self._conn.execute(query)]

    async def overdue(self, now: datetime, phases: Iterable[RunPhase]) -> builtins.list[RunRecord]:
        """Runs in `phases` whose deadline (creation + timeoutSeconds) is at or before `now`."""
        query = (
            select(runs)
            .where(runs.c.phase.in_([str(p) for p in phases]), runs.c.deadline_at <= now)
            .order_by(runs.c.deadline_at)
        )
        return [to_record(r) for r in await self._conn.execute(query)]

    async def set_phase(self, record: RunRecord, status: RunStatus) -> RunRecord:
        """Write `status` (its phase, attempt and the rest) if `record.resource_version` is
        still current; returns the record as stored. Raises Conflict when another writer got
        there first. The caller checks the move with `lifecycle.check_transition`."""
        fresh = replace(record, status=status, resource_version=record.resource_version + 1)
        result = await self._conn.execute(
            update(runs)
            .where(runs.c.id == record.id, runs.c.resource_version == record.resource_version)
            .values(
                resource_version=fresh.resource_version, updated_at=utcnow(), **_derived(status)
            )
        )
        if result.rowcount != 1:
            raise Conflict(
                f"run {record.name!r} was modified concurrently "
                f"(resourceVersion {record.resource_version} is stale)"
            )
        return fresh

    async def record_step(self, run_id: str, step: Step) -> tuple[Step, bool]:
        """Append `step` to the run's journal unless a step of its `callId` is there already.
        Returns (the step as journaled, whether this call wrote it): a step reported again
        (a redelivery, a retried request) gets the first one's output back."""
        stmt = (
            _upsert(self._conn)(run_steps)
            .values(
                run_id=run_id,
                call_id=step.callId,
                parent_call_id=step.parentCallId,
                type=step.type,
                name=step.name,
                status=step.status,
                attempt=step.attempt,
                step=step.model_dump(mode="json"),
                recorded_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["run_id", "call_id"])
        )
        if (await self._conn.execute(stmt)).rowcount == 1:
            return step, True
        recorded = await self.step(run_id, step.callId)
        assert recorded is not None  # the conflict was this very row
        return recorded, False

    async def step(self, run_id: str, call_id: str) -> Step | None:
        """The journaled step `call_id` of the run, or None."""
        row = (
            await self._conn.execute(
                select(run_steps.c.step).where(
                    run_steps.c.run_id == run_id, run_steps.c.call_id == call_id
                )
            )
        ).first()
        return Step.model_validate(row.step) if row else None

    async def journal(self, run_id: str) -> builtins.list[Step]:
        """Every step of the run, in the order they were recorded."""
        rows = await self._conn.execute(
            select(run_steps.c.step).where(run_steps.c.run_id == run_id).order_by(run_steps.c.id)
        )
        return [Step.model_validate(r.step) for r in rows]

    async def save_checkpoint(self, run_id: str, state: Any, attempt: int) -> Checkpoint:
        """Make `state` (any JSON) the run's latest checkpoint, saved during `attempt`."""
        saved = Checkpoint(run_id, state, attempt, utcnow())
        values = {"state": state, "attempt": attempt, "saved_at": saved.saved_at}
        stmt = _upsert(self._conn)(run_checkpoints).values(run_id=run_id, **values)
        await self._conn.execute(stmt.on_conflict_do_update(index_elements=["run_id"], set_=values))
        return saved

    async def load_checkpoint(self, run_id: str) -> Checkpoint | None:
        """The run's latest checkpoint, or None if it never saved one."""
        row = (
            await self._conn.execute(
                select(run_checkpoints).where(run_checkpoints.c.run_id == run_id)
            )
        ).first()
        if row is None:
            return None
        return Checkpoint(row.run_id, row.state, row.attempt, as_utc(row.saved_at))
