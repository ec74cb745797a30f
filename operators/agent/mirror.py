"""Both directions between Agent custom resources and the control plane.

Into the control plane: `manifest_from_resource` keeps what the user declared (name, labels,
annotations, spec) and drops what Kubernetes and kopf add; the service layer keys the apply
by the resource's uid and generation (service.agents.apply_from_kubernetes).

Back to Kubernetes: `StatusMirror` follows the outbox as a change feed
(data.outbox.change_feed: ordered, never skipping a row of a transaction still open) and,
for every agent that came from a resource, patches `.status` (phase, reason, message,
conditions, observedGeneration, node, …) through the status subresource and posts an Event
on each phase transition. Status patches are coalesced per agent (only the latest state is
written) and run concurrently; the uid travels in the patch as a precondition, so a status
never lands on a newer resource of the same name. A status write without a transition writes
no event: a poll of the agents' resourceVersions finds those.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterable
from typing import Any, cast

import structlog
from lightkube import ApiError, AsyncClient
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.core_v1 import Event
from lightkube.types import PatchType
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.data.outbox.change_feed import OutboxFeed
from controlplane.data.repositories.agents import AgentRepository
from controlplane.domain.events.envelope import rfc3339, utcnow
from controlplane.domain.records import AgentRecord
from controlplane.observability import metrics as obs
from controlplane.service.agents import AGGREGATE, KUBERNETES_GENERATION, KUBERNETES_UID

log = structlog.get_logger("agentos.operator.mirror")

AgentResource = create_namespaced_resource("agentos.io", "v1alpha1", "Agent", "agents")
# Annotations that are Kubernetes' or kopf's bookkeeping, not the user's.
FOREIGN_ANNOTATION_PREFIXES = ("kopf.zalando.org/", "kubectl.kubernetes.io/")
COMPONENT = "agentos-operator"


def manifest_from_resource(body: dict[str, Any]) -> dict[str, Any]:
    """The control-plane manifest of an Agent resource: its declared part only."""
    meta = body.get("metadata") or {}
    annotations = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if not k.startswith(FOREIGN_ANNOTATION_PREFIXES)
    }
    return {
        "apiVersion": body.get("apiVersion", "agentos.io/v1alpha1"),
        "kind": body.get("kind", "Agent"),
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "labels": dict(meta.get("labels") or {}),
            "annotations": annotations,
        },
        "spec": body.get("spec") or {},
    }


def kubernetes_generation(record: AgentRecord) -> int | None:
    """The resource generation the control plane has acted on, or None while it has not yet
    observed its latest spec (the control plane's own generation differs from the
    resource's: it moves only when the spec does)."""
    applied = record.annotations.get(KUBERNETES_GENERATION)
    if applied is None or record.status.observedGeneration != record.generation:
        return None
    return int(applied)


def resource_status(record: AgentRecord) -> dict[str, Any]:
    """`.status` of the Agent resource from the control plane's record (Kubernetes API
    conventions: conditions' observedGeneration in the resource's generations)."""
    status = record.status
    observed = kubernetes_generation(record)
    conditions = []
    for c in status.conditions:
        condition = {k: v for k, v in c.items() if k != "observedGeneration"}
        if observed is not None and c.get("observedGeneration") == record.generation:
            condition["observedGeneration"] = observed
        conditions.append(condition)
    out: dict[str, Any] = {
        "phase": status.phase,
        "reason": status.reason,
        "message": status.message,
        "conditions": conditions,
        "node": status.node,
        "runtimeClass": status.runtimeClass,
        "sandboxID": status.sandboxID,
        "restartCount": status.restartCount,
        "startedAt": status.startedAt,
        "readyAt": status.readyAt,
        "agentID": record.id,
    }
    if observed is not None:
        out["observedGeneration"] = observed
    return out


class StatusMirror:
    """Control plane → Agent resources (see the module docstring)."""

    def __init__(
        self,
        engine: AsyncEngine,
        client: AsyncClient,
        *,
        poll_s: float = 0.1,
        concurrency: int = 16,
        namespaces: Iterable[str] = (),
        versions_poll_s: float = 0.5,
        coalesce_s: float = 0.2,
    ) -> None:
        """`namespaces`: mirror only agents of these tenants (empty: every tenant)."""
        self._engine = engine
        self._client = client
        self._namespaces = frozenset(namespaces)
        self._feed = OutboxFeed(engine)
        self._poll_s = poll_s
        self._concurrency = concurrency
        self._dirty: dict[str, float] = {}  # agent id → when first marked (monotonic)
        self._inflight: set[str] = set()  # agent ids a patcher is writing
        self._versions: dict[str, int] = {}  # agent id → resourceVersion last seen
        self._versions_poll_s = versions_poll_s
        self._deletions: dict[str, asyncio.Event] = {}  # agent id → set on agent.deleted
        self._coalesce_s = coalesce_s
        self._wake = asyncio.Event()
        self._events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    def expect_deletion(self, agent_id: str) -> asyncio.Event:
        """An event set when the feed shows `agent.deleted` for `agent_id` (register before
        checking the database, so the deletion cannot slip between the two)."""
        return self._deletions.setdefault(agent_id, asyncio.Event())

    def forget_deletion(self, agent_id: str) -> None:
        self._deletions.pop(agent_id, None)

    def mark(self, agent_ids: Iterable[str]) -> None:
        """Write these agents' status soon (after `coalesce_s`, so the quick steps of one
        start, Created → Scheduled → Starting → Ready, make one or two writes, not four)."""
        now = time.monotonic()
        for agent_id in agent_ids:
            self._dirty.setdefault(agent_id, now)
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Mirror until `stop`: every agent once at start (resync), then every change."""
        cursor = await self._feed.current_horizon()
        async with self._engine.connect() as conn:
            everyone = await AgentRepository(conn).list()
        self._versions = {a.id: a.resource_version for a in everyone}
        self.mark(a.id for a in everyone if self._ours(a))
        tasks = [asyncio.create_task(self._patcher(stop)) for _ in range(self._concurrency)]
        tasks += [asyncio.create_task(self._poster(stop)) for _ in range(2)]
        tasks.append(asyncio.create_task(self._poll_versions(stop)))
        try:
            while not stop.is_set():
                cursor = await self._follow(cursor)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._poll_s)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _poll_versions(self, stop: asyncio.Event) -> None:
        """Status writes without a phase change (observedGeneration, conditions) write no
        event; a changed resourceVersion finds them."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._versions_poll_s)
            try:
                async with self._engine.connect() as conn:
                    current = await AgentRepository(conn).resource_versions()
            except Exception as exc:
                log.warning("version poll failed", error=f"{type(exc).__name__}: {exc}")
                continue
            self.mark(a for a, v in current.items() if self._versions.get(a) != v)
            self._versions = current

    def _ours(self, record: AgentRecord) -> bool:
        """Made from an Agent resource in a namespace this operator serves."""
        if KUBERNETES_UID not in record.annotations:
            return False
        return not self._namespaces or record.tenant in self._namespaces

    async def _follow(self, cursor: int) -> int:
        try:
            upto = await self._feed.horizon(cursor)
            while cursor < upto:
                batch = await self._feed.read(
                    cursor, upto, tenant=None, aggregate_type=AGGREGATE, limit=1000
                )
                cursor = batch[-1].id if len(batch) == 1000 else upto
                for ev in batch:
                    if ev.event_type == "agent.phase_changed":
                        self._events.put_nowait((ev.aggregate_id, ev.payload))
                    elif ev.event_type == "agent.deleted" and ev.aggregate_id in self._deletions:
                        self._deletions[ev.aggregate_id].set()
                self.mark(ev.aggregate_id for ev in batch if ev.event_type != "agent.deleted")
        except Exception as exc:
            log.warning("change feed read failed", error=f"{type(exc).__name__}: {exc}")
        return cursor

    async def _take(self, limit: int) -> list[str]:
        """Up to `limit` dirty agents, marked at least `coalesce_s` ago, that no other patcher
        holds: one writer per agent, so an older status never lands after a newer one."""
        while True:
            now = time.monotonic()
            ripe = now - self._coalesce_s
            taken = [a for a, at in self._dirty.items() if at <= ripe and a not in self._inflight][
                :limit
            ]
            if taken:
                break
            self._wake.clear()
            waiting = [at for a, at in self._dirty.items() if a not in self._inflight]
            timeout = max(0.0, min(waiting) - ripe) if waiting else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
        for agent_id in taken:
            del self._dirty[agent_id]
            self._inflight.add(agent_id)
        return taken

    async def _patcher(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            agent_ids = await self._take(limit=32)
            try:
                async with self._engine.connect() as conn:
                    records = await AgentRepository(conn).by_ids(agent_ids)
                for record in records.values():
                    if self._ours(record):
                        await self._patch_status(record)
            except Exception as exc:
                log.warning("status mirror failed", error=f"{type(exc).__name__}: {exc}")
                self.mark(agent_ids)  # retried on the next round
                await asyncio.sleep(0.5)
            finally:
                self._inflight.difference_update(agent_ids)
                if self._dirty:
                    self._wake.set()  # what was marked while held is free again

    async def _patch_status(self, record: AgentRecord) -> None:
        patch = {
            "metadata": {"uid": record.annotations[KUBERNETES_UID]},
            "status": resource_status(record),
        }
        try:
            await self._client.patch(
                AgentResource.Status,
                record.name,
                patch,
                namespace=record.tenant,
                patch_type=PatchType.MERGE,
            )
            obs.OPERATOR_STATUS_PATCHES.labels("ok").inc()
        except ApiError as exc:
            # 404: the resource is gone; 409: the name now belongs to a newer resource.
            if exc.status.code not in (404, 409):
                obs.OPERATOR_STATUS_PATCHES.labels("error").inc()
                raise
            obs.OPERATOR_STATUS_PATCHES.labels("gone").inc()

    async def _poster(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            batch = [await self._events.get()]
            while len(batch) < 64 and not self._events.empty():
                batch.append(self._events.get_nowait())
            try:
                async with self._engine.connect() as conn:
                    records = await AgentRepository(conn).by_ids({a for a, _ in batch})
                for agent_id, payload in batch:
                    record = records.get(agent_id)
                    if record is not None and self._ours(record):
                        await self._post_event(record, payload)
            except Exception as exc:
                log.warning("event post failed", error=f"{type(exc).__name__}: {exc}")

    async def _post_event(self, record: AgentRecord, payload: dict[str, Any]) -> None:
        """A core/v1 Event on the Agent resource for one transition (`kubectl describe`)."""
        now = rfc3339(utcnow())
        to_phase = payload.get("to_phase")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{record.name}.{uuid.uuid4().hex[:12]}",
                "namespace": record.tenant,
            },
            "involvedObject": {
                "apiVersion": "agentos.io/v1alpha1",
                "kind": "Agent",
                "name": record.name,
                "namespace": record.tenant,
                "uid": record.annotations[KUBERNETES_UID],
            },
            "reason": payload.get("reason") or str(to_phase),
            "message": f"{payload.get('from_phase') or '-'} → {to_phase}: "
            f"{payload.get('message') or ''}".strip(),
            "type": "Warning" if to_phase == "Failed" else "Normal",
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": COMPONENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self._client.create(cast(Event, Event.from_dict(body)))
        except ApiError as exc:
            if exc.status.code != 404:  # namespace gone
                raise
