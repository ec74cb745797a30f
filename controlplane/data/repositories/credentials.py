"""The credentials of sandboxes (table `agent_credentials`): only their SHA-256 is stored."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from controlplane.data.tables import agent_credentials
from controlplane.domain.events.envelope import as_utc, utcnow


@dataclass(frozen=True)
class AgentCredential:
    """A sandbox's credential: it speaks for agent `agent_id` (`tenant`/`agent`) from sandbox
    `sandbox_id` only."""

    id: str
    tenant: str
    agent_id: str
    agent: str
    sandbox_id: str
    created_at: datetime
    revoked_at: datetime | None


def _credential(r: Any) -> AgentCredential:
    return AgentCredential(
        r.id,
        r.tenant,
        r.agent_id,
        r.agent,
        r.sandbox_id,
        as_utc(r.created_at),
        as_utc(r.revoked_at) if r.revoked_at else None,
    )


class AgentCredentialRepository:
    """Issue, find and revoke sandbox credentials on the UnitOfWork's connection."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, credential: AgentCredential, token_hash: str) -> None:
        """Store a new credential (its secret only as `token_hash`)."""
        await self._conn.execute(
            insert(agent_credentials).values(
                id=credential.id,
                token_hash=token_hash,
                tenant=credential.tenant,
                agent_id=credential.agent_id,
                agent=credential.agent,
                sandbox_id=credential.sandbox_id,
                created_at=credential.created_at,
                revoked_at=None,
            )
        )

    async def add_many(self, credentials: Sequence[tuple[AgentCredential, str]]) -> None:
        """Store new credentials, each with its `token_hash`, in one statement."""
        if not credentials:
            return
        await self._conn.execute(
            insert(agent_credentials),
            [
                {
                    "id": c.id,
                    "token_hash": token_hash,
                    "tenant": c.tenant,
                    "agent_id": c.agent_id,
                    "agent": c.agent,
                    "sandbox_id": c.sandbox_id,
                    "created_at": c.created_at,
                    "revoked_at": None,
                }
                for c, token_hash in credentials
            ],
        )

    async def revoke_agents(self, agent_ids: Sequence[str]) -> int:
        """Revoke every live credential of these agents, in one statement; the count."""
        if not agent_ids:
            return 0
        result = await self._conn.execute(
            update(agent_credentials)
            .where(
                agent_credentials.c.agent_id.in_(list(agent_ids)),
                agent_credentials.c.revoked_at.is_(None),
            )
            .values(revoked_at=utcnow())
        )
        return int(result.rowcount or 0)

    async def revoke_sandbox(self, sandbox_id: str) -> int:
        """Revoke the live credentials of sandbox `sandbox_id` (it is gone); the count."""
        result = await self._conn.execute(
            update(agent_credentials)
            .where(
                agent_credentials.c.sandbox_id == sandbox_id,
                agent_credentials.c.revoked_at.is_(None),
            )
            .values(revoked_at=utcnow())
        )
        return int(result.rowcount or 0)

    async def by_hash(self, token_hash: str) -> AgentCredential | None:
        """The credential whose secret hashes to `token_hash`, revoked or not."""
        row = (
            await self._conn.execute(
                select(agent_credentials).where(agent_credentials.c.token_hash == token_hash)
            )
        ).first()
        return _credential(row) if row else None

    async def revoke_agent(self, agent_id: str, *, except_sandbox: str | None = None) -> int:
        """Revoke every live credential of the agent (but `except_sandbox`'s); the count."""
        stmt = update(agent_credentials).where(
            agent_credentials.c.agent_id == agent_id, agent_credentials.c.revoked_at.is_(None)
        )
        if except_sandbox is not None:
            stmt = stmt.where(agent_credentials.c.sandbox_id != except_sandbox)
        result = await self._conn.execute(stmt.values(revoked_at=utcnow()))
        return int(result.rowcount or 0)
