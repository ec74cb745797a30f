"""Approvals (table `approvals`): one row per (run, callId), written first-wins."""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from controlplane.data.tables import approvals, runs
from controlplane.domain.events.envelope import as_utc
from controlplane.domain.runs.approvals import Approval, ApprovalState


def _approval(r: Any) -> Approval:
    return Approval(
        id=r.id,
        run_id=r.run_id,
        action=r.action,
        details=dict(r.details or {}),
        state=ApprovalState(r.state),
        requested_at=as_utc(r.requested_at),
        expires_at=as_utc(r.expires_at) if r.expires_at else None,
        decided_at=as_utc(r.decided_at) if r.decided_at else None,
        decided_by=r.decided_by,
        edits=r.edits,
        comment=r.comment or "",
        tenant=r.tenant,
        run_name=r.run_name,
        call_id=r.call_id,
    )


class ApprovalRepository:
    """Store, find and decide approvals on the UnitOfWork's connection."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, approval: Approval) -> None:
        """Store a new (pending) approval. Raises IntegrityError when its (run, callId) is
        taken: the caller looks the existing one up first, under the run's row lock."""
        await self._conn.execute(
            insert(approvals).values(
                id=approval.id,
                run_id=approval.run_id,
                tenant=approval.tenant,
                run_name=approval.run_name,
                call_id=approval.call_id,
                action=approval.action,
                details=approval.details,
                state=str(approval.state),
                requested_at=approval.requested_at,
                expires_at=approval.expires_at,
                comment="",
            )
        )

    async def save(self, approval: Approval) -> None:
        """Write a decision (state, decidedAt, decidedBy, edits, comment) of a pending one."""
        await self._conn.execute(
            update(approvals)
            .where(approvals.c.id == approval.id)
            .values(
                state=str(approval.state),
                decided_at=approval.decided_at,
                decided_by=approval.decided_by,
                edits=approval.edits,
                comment=approval.comment,
            )
        )

    async def by_id(self, approval_id: str, *, for_update: bool = False) -> Approval | None:
        """The approval `approval_id`, locked for this transaction with `for_update`."""
        stmt = select(approvals).where(approvals.c.id == approval_id)
        if for_update:
            stmt = stmt.with_for_update()
        row = (await self._conn.execute(stmt)).first()
        return _approval(row) if row else None

    async def by_call(self, run_id: str, call_id: str) -> Approval | None:
        """The approval of run `run_id` for step `call_id`."""
        row = (
            await self._conn.execute(
                select(approvals).where(
                    approvals.c.run_id == run_id, approvals.c.call_id == call_id
                )
            )
        ).first()
        return _approval(row) if row else None

    async def of_run(self, run_id: str) -> builtins.list[Approval]:
        """The approvals of a run, oldest first."""
        rows = await self._conn.execute(
            select(approvals)
            .where(approvals.c.run_id == run_id)
            .order_by(approvals.c.requested_at, approvals.c.id)
        )
        return [_approval(r) for r in rows]

    async def of_tenant(
        self, tenant: str, state: ApprovalState | None = None, *, limit: int = 500
    ) -> builtins.list[Approval]:
        """The approvals of `tenant` (in `state` when given), oldest first, at most `limit`."""
        stmt = select(approvals).where(approvals.c.tenant == tenant)
        if state is not None:
            stmt = stmt.where(approvals.c.state == str(state))
        stmt = stmt.order_by(approvals.c.requested_at, approvals.c.id).limit(limit)
        return [_approval(r) for r in await self._conn.execute(stmt)]

    async def due(self, now: datetime, *, limit: int = 100) -> builtins.list[Approval]:
        """Pending approvals whose `expires_at` has passed at `now`."""
        rows = await self._conn.execute(
            select(approvals)
            .where(
                approvals.c.state == str(ApprovalState.PENDING),
                approvals.c.expires_at.is_not(None),
                approvals.c.expires_at <= now,
            )
            .order_by(approvals.c.expires_at)
            .limit(limit)
        )
        return [_approval(r) for r in rows]

    async def pending_of_run(self, run_id: str) -> builtins.list[Approval]:
        """The pending approvals of a run."""
        rows = await self._conn.execute(
            select(approvals).where(
                approvals.c.run_id == run_id, approvals.c.state == str(ApprovalState.PENDING)
            )
        )
        return [_approval(r) for r in rows]

    async def pending_of_ended_runs(
        self, terminal: Iterable[str], *, limit: int = 100
    ) -> builtins.list[Approval]:
        """Pending approvals whose run has ended (in one of the `terminal` phases)."""
        rows = await self._conn.execute(
            select(approvals)
            .join(runs, runs.c.id == approvals.c.run_id)
            .where(
                approvals.c.state == str(ApprovalState.PENDING),
                runs.c.phase.in_([str(p) for p in terminal]),
            )
            .limit(limit)
        )
        return [_approval(r) for r in rows]
