"""The append-only audit trail (table `audit_log`): who did what to which resource, and the
event it made. Written in the UnitOfWork of the change it records."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from controlplane.data.tables import audit_log
from controlplane.domain.events.envelope import as_utc, utcnow


@dataclass(frozen=True)
class AuditEntry:
    """One audit entry to append (see AuditRepository.record)."""

    action: str
    resource: str
    tenant: str | None = None
    event_id: str | None = None
    details: Mapping[str, Any] | None = None


def _escape(text: str) -> str:
    """`text` as a literal in a LIKE pattern (escape character backslash)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class AuditRecord:
    """One stored entry: `id` orders the trail (appended in that order), `principal` is who
    acted, `occurred_at` timezone-aware UTC."""

    id: int
    occurred_at: datetime
    principal: str
    tenant: str | None
    action: str
    resource: str
    event_id: str | None
    details: dict[str, Any]


@dataclass(frozen=True)
class AuditFilter:
    """Which entries of one tenant to read: `resource` names a resource and everything
    under it (`tenants/t/agents/a` matches the agent and its runs), `actor` a principal
    (with any of its tokens), `since`/`until` bound `occurred_at` (since inclusive, until
    exclusive)."""

    tenant: str
    resource: str | None = None
    actor: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class AuditRepository:
    """The audit trail as the principal of one UnitOfWork appends to it; it never commits."""

    def __init__(self, conn: AsyncConnection, principal: str) -> None:
        self._conn = conn
        self._principal = principal

    async def record(
        self,
        action: str,
        resource: str,
        *,
        tenant: str | None = None,
        event_id: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Append one entry (`action` like `tenant.create`, `resource` like `tenants/t1`)."""
        await self.record_many([AuditEntry(action, resource, tenant, event_id, details)])

    async def record_many(self, entries: list[AuditEntry]) -> None:
        """Append entries in one statement."""
        if not entries:
            return
        now = utcnow()
        await self._conn.execute(
            insert(audit_log),
            [
                {
                    "occurred_at": now,
                    "principal": self._principal,
                    "tenant": e.tenant,
                    "action": e.action,
                    "resource": e.resource,
                    "event_id": e.event_id,
                    "details": dict(e.details or {}),
                }
                for e in entries
            ],
        )

    async def page(self, where: AuditFilter, *, limit: int, after_id: int = 0) -> list[AuditRecord]:
        """Up to `limit` entries matching `where`, oldest first, with an id above `after_id`
        (keyset pagination on the append order)."""
        query = select(audit_log).where(
            audit_log.c.tenant == where.tenant, audit_log.c.id > after_id
        )
        if where.resource:
            prefix = _escape(where.resource)
            query = query.where(
                or_(
                    audit_log.c.resource == where.resource,
                    audit_log.c.resource.like(prefix + "/%", escape="\\"),
                )
            )
        if where.actor:
            # A token's principal is recorded as `name (token id)` (Principal.audit_name).
            query = query.where(
                or_(
                    audit_log.c.principal == where.actor,
                    audit_log.c.principal.like(_escape(where.actor) + " (token %", escape="\\"),
                )
            )
        if where.since is not None:
            query = query.where(audit_log.c.occurred_at >= where.since)
        if where.until is not None:
            query = query.where(audit_log.c.occurred_at < where.until)
        rows = await self._conn.execute(query.order_by(audit_log.c.id).limit(limit))
        return [
            AuditRecord(
                id=int(r.id),
                occurred_at=as_utc(r.occurred_at),
                principal=r.principal,
                tenant=r.tenant,
                action=r.action,
                resource=r.resource,
                event_id=r.event_id,
                details=dict(r.details or {}),
            )
            for r in rows
        ]
