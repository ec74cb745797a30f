"""A cache of one kind of Kubernetes object, kept by list-then-watch (client-go's informer
in small): after the first list, every watch event updates the cache and is handed to a
callback; after any error it relists (with a backoff from 0.1 s to 5 s).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import structlog
from lightkube import AsyncClient
from lightkube.generic_resource import create_global_resource, create_namespaced_resource

log = structlog.get_logger("agentos.runtime.kubernetes")

# Pods and Nodes as plain mappings for the informers: a watch delivers thousands of them, and
# reading JSON into dicts costs far less than into typed models and back.
RawPod = create_namespaced_resource("", "v1", "Pod", "pods")
RawNode = create_global_resource("", "v1", "Node", "nodes")


def _resource_version(obj: dict[str, Any]) -> int:
    try:
        return int(obj["metadata"].get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


class Informer:
    """A cache of one kind of object kept by list-then-watch; relists after any error.
    `on_change(obj, deleted)` runs for each change after the first list."""

    def __init__(
        self,
        client: AsyncClient,
        kind: type,
        on_change: Callable[[dict[str, Any], bool], None],
        labels: dict[str, Any] | None = None,
        namespaced: bool = True,
    ) -> None:
        self._client = client
        self._namespace = "*" if namespaced else None
        self._kind = kind
        self._labels = labels
        self._on_change = on_change
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @staticmethod
    def key(obj: dict[str, Any]) -> tuple[str, str]:
        meta = obj["metadata"]
        return meta.get("namespace") or "", meta["name"]

    def put(self, obj: dict[str, Any], *, deleted: bool = False) -> None:
        """Record a newer state of `obj` (a write-through from our own requests, or a
        watch event); an older one than the cache holds is ignored."""
        key = self.key(obj)
        held = self.objects.get(key)
        if held is not None and _resource_version(held) > _resource_version(obj):
            return
        if deleted:
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        self._on_change(obj, deleted)

    async def _run(self) -> None:
        pause_s = 0.1
        while True:
            try:
                listing: Any = self._client.list(
                    self._kind, namespace=self._namespace, labels=self._labels
                )
                fresh = {self.key(o): o async for o in (x.to_dict() async for x in listing)}
                version = listing.resourceVersion
                gone = [o for k, o in self.objects.items() if k not in fresh]
                self.objects = fresh
                for obj in gone:
                    self._on_change(obj, True)
                for obj in fresh.values():
                    self._on_change(obj, False)
                self.synced.set()
                pause_s = 0.1
                async for kind, obj in self._client.watch(
                    self._kind,
                    namespace=self._namespace,
                    labels=self._labels,
                    resource_version=version,
                ):
                    self.put(obj.to_dict(), deleted=kind == "DELETED")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "watch failed; relisting",
                    kind=self._kind.__name__,
                    error=f"{type(exc).__name__}: {exc}",
                )
                await asyncio.sleep(pause_s)
                pause_s = min(pause_s * 2, 5.0)
