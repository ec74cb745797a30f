"""Idempotency keys on the UnitOfWork's transaction (IETF httpapi Idempotency-Key draft;
AIP-155 `request_id` for gRPC).

A key's row is written in the same transaction as the change it guards, with the response
to replay, so a crash between the change and the key cannot happen: both commit or neither
does. While that transaction is open, the key is *held*: on PostgreSQL by a transaction-
scoped advisory lock (visible to every process on the database), on SQLite — one process by
design, writers serialised by the database — by a set in this process. A second request
with a held key is told so at once instead of queueing behind the first.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from controlplane.data.dialect import dialect_insert
from controlplane.data.tables import idempotency_keys

COMPLETED = "Completed"


@dataclass(frozen=True)
class StoredResponse:
    """The first response to a key: its request's hash, HTTP status and JSON body."""

    request_hash: str
    status: int
    body: Any


def _lock_id(scope: tuple[str, str, str]) -> int:
    """A signed 64-bit advisory-lock id for (tenant, principal, key)."""
    digest = hashlib.sha256("\x00".join(("idempotency", *scope)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class IdempotencyRepository:
    """Keys scoped by (tenant, principal, key)."""

    # SQLite only: keys held by open transactions of this process, per database URL.
    _held: ClassVar[set[tuple[str, str, str, str]]] = set()

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._mine: list[tuple[str, str, str, str]] = []

    async def hold(self, tenant: str, principal: str, key: str) -> bool:
        """Hold the key until this transaction ends; False if another request holds it."""
        if self._conn.dialect.name == "postgresql":
            held = await self._conn.execute(
                text("SELECT pg_try_advisory_xact_lock(:id)"),
                {"id": _lock_id((tenant, principal, key))},
            )
            return bool(held.scalar_one())
        slot = (str(self._conn.engine.url), tenant, principal, key)
        if slot in self._held:
            return False
        self._held.add(slot)
        self._mine.append(slot)
        return True

    def release(self) -> None:
        """Let go of the keys held in this process (the UnitOfWork calls it at its end;
        PostgreSQL releases its advisory locks with the transaction)."""
        for slot in self._mine:
            self._held.discard(slot)
        self._mine.clear()

    async def find(
        self, tenant: str, principal: str, key: str, now: datetime
    ) -> StoredResponse | None:
        """The stored response of a key that has not expired, or None."""
        k = idempotency_keys.c
        row = (
            await self._conn.execute(
                select(k.request_hash, k.response_status, k.response_body).where(
                    k.tenant == tenant, k.principal == principal, k.key == key, k.expires_at > now
                )
            )
        ).first()
        if row is None:
            return None
        return StoredResponse(row.request_hash, int(row.response_status), row.response_body)

    async def save(
        self,
        tenant: str,
        principal: str,
        key: str,
        response: StoredResponse,
        now: datetime,
        expires_at: datetime,
    ) -> None:
        """Store the response of a key (replacing an expired row of the same key)."""
        values = {
            "request_hash": response.request_hash,
            "state": COMPLETED,
            "response_status": response.status,
            "response_body": response.body,
            "created_at": now,
            "expires_at": expires_at,
        }
        stmt = dialect_insert(self._conn, idempotency_keys).values(
            tenant=tenant, principal=principal, key=key, **values
        )
        await self._conn.execute(
            stmt.on_conflict_do_update(index_elements=["tenant", "principal", "key"], set_=values)
        )

    async def purge(self, now: datetime) -> int:
        """Delete every expired key; returns how many."""
        result = await self._conn.execute(
            delete(idempotency_keys).where(idempotency_keys.c.expires_at <= now)
        )
        return int(result.rowcount)
