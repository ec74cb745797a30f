"""Who calls the gateway: a sandbox credential, verified with a short cache."""

from __future__ import annotations

import time
from collections.abc import Callable

from controlplane.data.unit_of_work import UnitOfWork
from controlplane.service import run_execution
from controlplane.service.run_execution import AgentIdentity


class CredentialCache:
    """`authenticate(secret)` with each verified credential trusted for `ttl_s` seconds (a
    revoked credential stops working within that time; 0 disables the cache)."""

    def __init__(self, uow: Callable[[], UnitOfWork], ttl_s: float = 2.0) -> None:
        self._uow = uow
        self._ttl_s = ttl_s
        self._cache: dict[str, tuple[AgentIdentity, float]] = {}

    async def authenticate(self, secret: str | None) -> AgentIdentity:
        """The caller's identity. Raises Unauthenticated (service.run_execution)."""
        now = time.monotonic()
        hit = self._cache.get(secret or "")
        if hit is not None and hit[1] > now:
            return hit[0]
        async with self._uow() as uow:
            who = await run_execution.authenticate_agent(uow, secret)
        if self._ttl_s > 0 and secret:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[secret] = (who, now + self._ttl_s)
        return who
