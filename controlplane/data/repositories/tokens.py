"""API tokens (table `api_tokens`): only their SHA-256 is stored, never the token."""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from controlplane.data.tables import api_tokens
from controlplane.domain.access import Role
from controlplane.domain.events.envelope import as_utc
from controlplane.domain.records import TokenRecord


def _record(r: Any) -> TokenRecord:
    return TokenRecord(
        id=r.id,
        principal=r.principal,
        tenant=r.tenant,
        role=Role(r.role) if r.role else None,
        platform_admin=bool(r.platform_admin),
        created_at=as_utc(r.created_at),
        created_by=r.created_by,
        expires_at=as_utc(r.expires_at) if r.expires_at else None,
        revoked_at=as_utc(r.revoked_at) if r.revoked_at else None,
    )


_COLUMNS = [c for c in api_tokens.c if c.name != "token_hash"]


class TokenRepository:
    """Tokens of every tenant and of the platform admins."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, record: TokenRecord, token_hash: str) -> None:
        await self._conn.execute(
            insert(api_tokens).values(
                id=record.id,
                token_hash=token_hash,
                principal=record.principal,
                tenant=record.tenant,
                role=str(record.role) if record.role else None,
                platform_admin=record.platform_admin,
                created_at=record.created_at,
                created_by=record.created_by,
                expires_at=record.expires_at,
            )
        )

    async def active_by_hash(self, token_hash: str, now: datetime) -> TokenRecord | None:
        """The token with this hash if it is neither revoked nor expired (one indexed read)."""
        t = api_tokens.c
        row = (
            await self._conn.execute(
                select(*_COLUMNS).where(
                    t.token_hash == token_hash,
                    t.revoked_at.is_(None),
                    or_(t.expires_at.is_(None), t.expires_at > now),
                )
            )
        ).first()
        return _record(row) if row else None

    async def find(self, token_id: str) -> TokenRecord | None:
        row = (
            await self._conn.execute(select(*_COLUMNS).where(api_tokens.c.id == token_id))
        ).first()
        return _record(row) if row else None

    async def list(
        self, tenant: str | None, *, platform_admins: bool = False
    ) -> builtins.list[TokenRecord]:
        """Tokens of `tenant` (or the platform admins' with `platform_admins`), oldest first."""
        t = api_tokens.c
        query = select(*_COLUMNS).order_by(t.created_at, t.id)
        query = query.where(t.platform_admin.is_(True) if platform_admins else t.tenant == tenant)
        return [_record(r) for r in await self._conn.execute(query)]

    async def revoke(self, token_id: str, now: datetime) -> bool:
        """Mark a token revoked; False if it does not exist or was already revoked."""
        result = await self._conn.execute(
            update(api_tokens)
            .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return result.rowcount == 1

    async def any_platform_admin(self, now: datetime) -> bool:
        """Whether some platform-admin token is active."""
        t = api_tokens.c
        row = (
            await self._conn.execute(
                select(t.id)
                .where(
                    t.platform_admin.is_(True),
                    t.revoked_at.is_(None),
                    or_(t.expires_at.is_(None), t.expires_at > now),
                )
                .limit(1)
            )
        ).first()
        return row is not None
