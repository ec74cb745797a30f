"""The model proxy's admission and metering (architecture/model-gateway.md): which run a
call is attributed to, which provider serves its model, whether the tenant's rate limit and
token budget admit it, and the recording of each call as an `llm` step.

What the proxy reads before a call is cached for a second or two (the attribution, the
tenant's providers, the budget window's use), so a call costs no database round trip on
its way to the upstream; the recording is written after the answer has gone, off the
request's path, in batches (one transaction per batch). The trade: a run that ends, a
provider changed or a budget crossed is seen within `ttl_s`; a budget is admission
control, so a window may overshoot by the calls in flight when it was crossed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import structlog

from controlplane.api.ratelimit import TokenBucketLimiter
from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.errors import ModelNotFound
from controlplane.domain.providers.metering import budget_refusal, budget_window
from controlplane.domain.providers.model import ProviderRecord
from controlplane.domain.runs.model import Usage
from controlplane.domain.runs.steps import Step
from controlplane.service import model_calls
from controlplane.service.model_calls import Metered, RunRef
from controlplane.service.run_execution import AgentIdentity

K = TypeVar("K")
V = TypeVar("V")
log = structlog.get_logger("agentos.gateway.models")
MAX_BATCH = 500


class TtlCache(Generic[K, V]):
    """A dict whose entries live `ttl_s` seconds (0: nothing is kept); at most `max_keys`
    entries (all dropped when full: the next reads fill it again)."""

    def __init__(self, ttl_s: float, max_keys: int = 10_000) -> None:
        self._ttl_s = ttl_s
        self._max_keys = max_keys
        self._items: dict[K, tuple[V, float]] = {}

    def get(self, key: K) -> V | None:
        hit = self._items.get(key)
        return hit[0] if hit is not None and hit[1] > time.monotonic() else None

    def put(self, key: K, value: V) -> V:
        if self._ttl_s > 0:
            if len(self._items) >= self._max_keys:
                self._items.clear()
            self._items[key] = (value, time.monotonic() + self._ttl_s)
        return value

    def drop(self, key: K) -> None:
        self._items.pop(key, None)


class RequestLimiter:
    """`requestsPerMinute` per (tenant, provider): a token bucket refilled at rpm/60 per
    second with a burst of one minute's requests (api/ratelimit.py). In this process:
    N gateway replicas allow N times the rate."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str], tuple[int, TokenBucketLimiter]] = {}

    def take(self, tenant: str, provider: str, per_minute: int | None) -> None:
        """Count one request. Raises RateLimited (with `retry_after_s`) over the rate."""
        if per_minute is None:
            return
        key = (tenant, provider)
        held = self._buckets.get(key)
        if held is None or held[0] != per_minute:
            held = (per_minute, TokenBucketLimiter(per_minute / 60.0, per_minute))
            self._buckets[key] = held
        held[1].take(f"{tenant}/{provider}")


class Meter:
    """Attribution, admission and recording of model calls, on `uow`."""

    def __init__(
        self, uow: Callable[[], UnitOfWork], *, ttl_s: float = 1.0, batch_s: float = 0.02
    ) -> None:
        self._uow = uow
        self._runs: TtlCache[tuple[str, str | None, int | None], RunRef] = TtlCache(ttl_s)
        self._providers: TtlCache[str, list[ProviderRecord]] = TtlCache(ttl_s * 2)
        self._used: TtlCache[tuple[str, str, int], int] = TtlCache(ttl_s)
        self._limiter = RequestLimiter()
        self._pending: list[Metered] = []
        self._flusher: asyncio.Task[None] | None = None
        self._batch_s = batch_s

    async def attribute(self, who: AgentIdentity, run: str | None, attempt: int | None) -> RunRef:
        """The run the call is attributed to (service.model_calls.attribute, cached)."""
        key = (who.credential_id, run, attempt)
        cached = self._runs.get(key)
        if cached is not None:
            return cached
        async with self._uow() as uow:
            ref = await model_calls.attribute(uow, who, run, attempt)
        return self._runs.put(key, ref)

    async def provider_for(self, tenant: str, model: str) -> ProviderRecord:
        """The tenant's provider that lists `model` (the first by name). Raises
        ModelNotFound."""
        records = self._providers.get(tenant)
        if records is None:
            async with self._uow() as uow:
                records = self._providers.put(tenant, await model_calls.providers(uow, tenant))
        for record in records:
            if model in record.spec.models:
                return record
        raise ModelNotFound(f"no model provider of tenant {tenant!r} serves model {model!r}")

    async def admit(self, provider: ProviderRecord, now_s: float) -> int:
        """Admit one call to `provider` or raise RateLimited / BudgetExhausted (both with
        `retry_after_s`). Returns the budget window the call counts in."""
        limits = provider.spec.limits
        window = budget_window(now_s, limits.budgetWindowSeconds)
        self._limiter.take(provider.tenant, provider.name, limits.requestsPerMinute)
        if limits.tokenBudget is not None:
            key = (provider.tenant, provider.name, window)
            used = self._used.get(key)
            if used is None:
                async with self._uow() as uow:
                    used = await model_calls.window_tokens(
                        uow, provider.tenant, provider.name, window
                    )
                self._used.put(key, used)
            refusal = budget_refusal(used, limits, now_s, provider.name)
            if refusal is not None:
                raise refusal
        return window

    def record(
        self, run: RunRef, step: Step, provider: ProviderRecord, window: int, operation: str
    ) -> None:
        """Record the call in the background (the answer does not wait for it): calls are
        written in batches, one transaction each, every `batch_s` seconds at most; the
        budget cache counts the call's tokens at once."""
        key = (provider.tenant, provider.name, window)
        used = self._used.get(key)
        if used is not None:
            self._used.put(key, used + _tokens(step.usage))
        self._pending.append(Metered(run, step, provider.name, window, operation))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self._pending:
            await asyncio.sleep(self._batch_s)
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            await self._write(batch)

    async def _write(self, batch: list[Metered]) -> None:
        for attempt in range(3):
            try:
                async with self._uow() as uow:
                    await model_calls.record_calls(uow, batch)
                return
            except Exception as exc:  # a lost race on a run row: try again
                if attempt == 2:
                    log.error(
                        "model calls not recorded",
                        calls=len(batch),
                        runs=sorted({c.run.name for c in batch}),
                        error=type(exc).__name__,
                    )
                await asyncio.sleep(0.05 * (attempt + 1))

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait for the recordings in flight (on shutdown)."""
        if self._flusher is not None:
            await asyncio.wait({self._flusher}, timeout=timeout_s)


def _tokens(usage: Usage) -> int:
    return usage.inputTokens + usage.outputTokens
