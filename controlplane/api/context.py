"""What the REST and gRPC entry points share in one process: the container, token
verification with a short cache, and the rate limiter (one bucket per principal whether it
speaks REST or gRPC)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from controlplane.api.ratelimit import TokenBucketLimiter
from controlplane.domain.access import Principal
from controlplane.domain.events.envelope import utcnow
from controlplane.service import tokens as token_service

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from controlplane.bootstrap import Container


@dataclass
class _Cached:
    principal: Principal
    until: float


class ApiContext:
    """Built once per process from a bootstrap.Container (see `of`)."""

    def __init__(self, container: Container) -> None:
        s = container.settings
        self.container = container
        self.settings = s
        self.limiter = TokenBucketLimiter(s.rate_limit_per_s, s.rate_limit_burst)
        # Reads of one statement need no transaction: autocommit spares BEGIN and ROLLBACK,
        # two round trips of every such read. Same pool as the engine's.
        self.reads: AsyncEngine = container.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._cache: dict[str, _Cached] = {}
        self._cache_ttl_s = s.auth_cache_ttl_s

    @classmethod
    def of(cls, container: Container) -> ApiContext:
        """The context of `container`, created on first use (REST and gRPC share it)."""
        if container.api is None:
            container.api = cls(container)
        return container.api

    async def authenticate(self, token: str | None) -> Principal:
        """The principal of a bearer token, then one token of its rate. Raises
        Unauthenticated, RateLimited.

        A verified token is trusted for `auth_cache_ttl_s` (default 5 s) without reading the
        database again; revocation through this process's API takes effect at once, through
        another process within that time.
        """
        principal = await self._verify(token)
        self.limiter.take(principal.name)
        return principal

    async def _verify(self, token: str | None) -> Principal:
        key = token_service.token_hash(token) if token else ""
        now = time.monotonic()
        cached = self._cache.get(key) if key else None
        if cached is not None and cached.until > now:
            return cached.principal
        async with self.container.uow() as uow:
            record = await token_service.authenticate(uow, token)
        principal = record.as_principal()
        if self._cache_ttl_s > 0:
            expires = (
                (record.expires_at - utcnow()).total_seconds()
                if record.expires_at
                else float("inf")
            )
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = _Cached(principal, now + min(self._cache_ttl_s, expires))
        return principal

    def forget(self, token_id: str) -> None:
        """Drop a revoked token from the cache."""
        for key in [k for k, c in self._cache.items() if c.principal.token_id == token_id]:
            del self._cache[key]

    def forget_tenant(self, tenant: str) -> None:
        """Drop every cached token of a deleted tenant."""
        for key in [k for k, c in self._cache.items() if c.principal.tenant == tenant]:
            del self._cache[key]
