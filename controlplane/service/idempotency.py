"""Idempotent create-style requests (architecture/api-compatibility.md).

Semantics of the IETF httpapi Idempotency-Key draft (draft-ietf-httpapi-idempotency-key-
header) and of AIP-155 (`request_id`), one implementation for REST and gRPC:

- same key, same request → the first response, replayed (the caller marks it replayed);
- same key, another request → IdempotencyKeyReused (HTTP 422);
- same key while the first request is still in flight → IdempotencyKeyInUse (HTTP 409);
- a key is scoped by tenant and principal, and kept `retention_s` (default 24 h).

The key is stored by the UnitOfWork that makes the change, so both commit or neither does.
Only successful responses are stored: a request that failed wrote nothing and may be retried
with the same key.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from controlplane.data.repositories.idempotency import StoredResponse
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.errors import IdempotencyKeyInUse, IdempotencyKeyReused
from controlplane.domain.events.envelope import utcnow

DEFAULT_RETENTION_S = 24 * 3600.0
log = logging.getLogger(__name__)


def request_hash(operation: str, body: Any) -> str:
    """A fingerprint of a request: `operation` (e.g. `POST /api/v1/tenants/t/agents`) and
    its JSON body in canonical form (sorted keys), as hex SHA-256."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{operation}\n{canonical}".encode()).hexdigest()


@dataclass(frozen=True)
class IdempotencyRequest:
    """A key as the caller sent it, scoped by `tenant` and `principal`."""

    tenant: str
    principal: str
    key: str
    request_hash: str
    retention_s: float = DEFAULT_RETENTION_S


async def begin(uow: UnitOfWork, request: IdempotencyRequest) -> StoredResponse | None:
    """Hold the key for this UnitOfWork; return the stored response of an earlier request
    with the same key and body, or None if this request is the first.

    Raises IdempotencyKeyInUse (held by a request still in flight), IdempotencyKeyReused
    (used with another body).
    """
    r = request
    if not await uow.idempotency.hold(r.tenant, r.principal, r.key):
        raise IdempotencyKeyInUse(
            f"a request with Idempotency-Key {r.key!r} is still in progress; retry later"
        )
    stored = await uow.idempotency.find(r.tenant, r.principal, r.key, utcnow())
    if stored is not None and stored.request_hash != r.request_hash:
        raise IdempotencyKeyReused(
            f"Idempotency-Key {r.key!r} was already used with a different request"
        )
    return stored


async def remember(uow: UnitOfWork, request: IdempotencyRequest, status: int, body: Any) -> None:
    """Store the response of the first request with this key, in the UnitOfWork (the
    caller commits)."""
    now = utcnow()
    r = request
    await uow.idempotency.save(
        r.tenant,
        r.principal,
        r.key,
        StoredResponse(r.request_hash, status, body),
        now,
        now + timedelta(seconds=r.retention_s),
    )


async def purge_expired(uow: UnitOfWork) -> int:
    """Delete every expired key; commits; returns how many."""
    n = await uow.idempotency.purge(utcnow())
    await uow.commit()
    return n


async def purge_periodically(
    uow_factory: Callable[[], UnitOfWork], interval_s: float, stop: asyncio.Event
) -> None:
    """Purge expired keys every `interval_s` seconds until `stop` (run by `agentos serve`).
    A failed purge is logged and tried again at the next interval."""
    while not stop.is_set():
        try:
            async with uow_factory() as uow:
                n = await purge_expired(uow)
            if n:
                log.info("purged %d expired idempotency keys", n)
        except Exception:  # the database may be briefly away; the next round retries
            log.exception("purging idempotency keys failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
