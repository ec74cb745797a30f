"""The append-only audit trail (table `audit_log`): who did what to which resource, and the
event it made. Written in the UnitOfWork of the change it records."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from controlplane.data.tables import audit_log
from controlplane.domain.events.envelope import utcnow


@dataclass(frozen=True)
class AuditEntry:
    """One audit entry to append (see AuditRepository.record)."""

    action: str
    resource: str
    tenant: str | None = None
    event_id: str | None = None
    details: Mapping[str, Any] | None = None


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
