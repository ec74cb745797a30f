"""One active operator: leader election on a `coordination.k8s.io/v1` Lease, the way
client-go's `leaderelection` package does it.

Every candidate reads the Lease; the holder renews it every `retry_period_s`; a candidate may
take it only when it has seen the same record (same resourceVersion) unchanged for a whole
`leaseDurationSeconds` of its *own* clock, so clocks need not agree. Every write is a
`PUT` carrying the resourceVersion that was read (optimistic concurrency): when two
candidates race, the apiserver accepts exactly one write and answers 409 Conflict to the
other, which stays a candidate. There is no tie to freeze on (kopf's peering freezes every
peer of equal priority; see adr/).

A leader that cannot renew within `renew_deadline_s` stops acting (`hold` returns) before
the Lease can expire and another candidate can take it: renew_deadline < lease duration.
On a graceful stop the leader releases the Lease (empty holder) so a standby takes over at
once instead of after the lease duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import structlog
from lightkube import ApiError, AsyncClient
from lightkube.resources.coordination_v1 import Lease

log = structlog.get_logger("agentos.operator.leader")


def _micro_time(moment: datetime) -> str:
    """RFC 3339 with microseconds, as Kubernetes' MicroTime."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseSettings:
    """Times in seconds; client-go's defaults (15 / 10 / 2)."""

    namespace: str
    name: str
    identity: str
    lease_duration_s: int = 15
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0


class LeaderElector:
    """Acquire, hold and release one Lease (see the module docstring)."""

    def __init__(self, client: AsyncClient, settings: LeaseSettings) -> None:
        if settings.renew_deadline_s >= settings.lease_duration_s:
            raise ValueError("renew_deadline_s must be shorter than lease_duration_s")
        self._client = client
        self.settings = settings
        self.is_leader = False
        self._observed_version: str | None = None
        self._observed_at = 0.0  # monotonic time the observed record last changed

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this candidate holds the Lease (True) or `stop` is set (False)."""
        while not stop.is_set():
            if await self._try_acquire_or_renew():
                self.is_leader = True
                log.info("became leader", lease=self.settings.name, identity=self.settings.identity)
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.retry_period_s)
        return False

    async def hold(self, stop: asyncio.Event) -> bool:
        """Renew until `stop` is set (returns False; the caller stops acting, then
        `release`s) or renewal fails for `renew_deadline_s` (returns True with `is_leader`
        False: leadership is lost and the caller must stop acting at once)."""
        last_renewed = time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.retry_period_s)
            if stop.is_set():
                break
            try:
                renewed = await asyncio.wait_for(
                    self._try_acquire_or_renew(), self.settings.renew_deadline_s
                )
            except Exception as exc:
                log.warning("lease renewal failed", error=f"{type(exc).__name__}: {exc}")
                renewed = False
            if renewed:
                last_renewed = time.monotonic()
            elif time.monotonic() - last_renewed >= self.settings.renew_deadline_s:
                self.is_leader = False
                log.error("lost leadership", lease=self.settings.name)
                return True
        return False

    async def release(self) -> None:
        """Give the Lease up (holder emptied) if this candidate holds it."""
        if not self.is_leader:
            return
        self.is_leader = False
        try:
            lease = await self._client.get(
                Lease, self.settings.name, namespace=self.settings.namespace
            )
            body = lease.to_dict()
            if body.get("spec", {}).get("holderIdentity") != self.settings.identity:
                return
            body["spec"]["holderIdentity"] = None
            body["spec"]["leaseDurationSeconds"] = 1
            await self._client.replace(cast(Lease, Lease.from_dict(body)))
            log.info("released leadership", lease=self.settings.name)
        except Exception as exc:
            log.warning("lease release failed", error=f"{type(exc).__name__}: {exc}")

    async def _try_acquire_or_renew(self) -> bool:
        s = self.settings
        now = datetime.now(UTC)
        try:
            lease = await self._client.get(Lease, s.name, namespace=s.namespace)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
            return await self._create(now)
        body: dict[str, Any] = lease.to_dict()
        meta, spec = body["metadata"], body.setdefault("spec", {})
        if meta.get("resourceVersion") != self._observed_version:
            self._observed_version = meta.get("resourceVersion")
            self._observed_at = time.monotonic()
        holder = spec.get("holderIdentity")
        duration_s = spec.get("leaseDurationSeconds") or s.lease_duration_s
        held_by_other = bool(holder) and holder != s.identity
        if held_by_other and time.monotonic() < self._observed_at + duration_s:
            return False
        if holder != s.identity:
            spec["acquireTime"] = _micro_time(now)
            spec["leaseTransitions"] = (spec.get("leaseTransitions") or 0) + 1
        spec.update(
            holderIdentity=s.identity,
            leaseDurationSeconds=s.lease_duration_s,
            renewTime=_micro_time(now),
        )
        try:
            # The PUT carries the resourceVersion read above: 409 if anyone wrote since.
            updated = await self._client.replace(cast(Lease, Lease.from_dict(body)))
        except ApiError as exc:
            if exc.status.code == 409:
                return False
            raise
        self._observed_version = updated.metadata.resourceVersion if updated.metadata else None
        self._observed_at = time.monotonic()
        return True

    async def _create(self, now: datetime) -> bool:
        s = self.settings
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": s.name, "namespace": s.namespace},
            "spec": {
                "holderIdentity": s.identity,
                "leaseDurationSeconds": s.lease_duration_s,
                "acquireTime": _micro_time(now),
                "renewTime": _micro_time(now),
                "leaseTransitions": 0,
            },
        }
        try:
            created = await self._client.create(cast(Lease, Lease.from_dict(body)))
        except ApiError as exc:
            if exc.status.code == 409:  # another candidate created it first
                return False
            raise
        self._observed_version = created.metadata.resourceVersion if created.metadata else None
        self._observed_at = time.monotonic()
        return True
