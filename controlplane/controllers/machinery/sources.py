"""What wakes a controller besides `notify`: a poll of versions and coalescing triggers.

- `VersionPoller` is a poll-based informer: every `interval_s` it lists key → version and
  enqueues the keys whose version moved since a reconcile last read them (writes by another
  process); every `resync_s` it enqueues every key (level-triggered resync) and runs
  `on_resync` (a sweep).
- `Trigger` runs one action per wake-up, one run at a time, however often it is set in
  between (a scheduling pass wanted by many reconciles is one pass).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping

import structlog

log = structlog.get_logger("agentos.controller")


class VersionPoller:
    """Enqueues keys written by others (see the module docstring).

    `list_versions()` → every key's current version; `enqueue(key)` queues a reconcile.
    Reconciles call `observe(key, version)` with what they read and `forget(key)` when the
    key is gone, so the controller's own writes (each followed by a requeue anyway) do not
    enqueue again.
    """

    def __init__(
        self,
        list_versions: Callable[[], Awaitable[Mapping[str, int]]],
        enqueue: Callable[[str], None],
        *,
        interval_s: float,
        resync_s: float,
        on_resync: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._list_versions = list_versions
        self._enqueue = enqueue
        self.interval_s = interval_s
        self.resync_s = resync_s
        self._on_resync = on_resync
        self._seen: dict[str, int] = {}

    def observe(self, key: str, version: int) -> None:
        """A reconcile read `key` at `version`."""
        self._seen[key] = version

    def forget(self, key: str) -> None:
        """`key` is gone."""
        self._seen.pop(key, None)

    async def poll(self, *, enqueue_all: bool) -> None:
        """Enqueue the keys whose version moved (every key when `enqueue_all`)."""
        current = await self._list_versions()
        for key, version in current.items():
            if enqueue_all or self._seen.get(key) != version:
                self._enqueue(key)
        for gone in self._seen.keys() - current.keys():
            del self._seen[gone]

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every `interval_s` until `stop`; a failed poll is logged and retried."""
        last_resync = time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)
            resync = time.monotonic() - last_resync >= self.resync_s
            try:
                await self.poll(enqueue_all=resync)
                if resync:
                    last_resync = time.monotonic()
                    if self._on_resync is not None:
                        await self._on_resync()
            except Exception as exc:
                log.warning("poll failed", error=f"{type(exc).__name__}: {exc}")


class Trigger:
    """`set()` from anywhere; `run(stop)` calls `action()` once per wake-up, serialised.

    A failed action is logged as "`what` failed" and waits for the next `set()`.
    """

    def __init__(self, action: Callable[[], Awaitable[object]], what: str) -> None:
        self._action = action
        self._what = what
        self._wanted = asyncio.Event()

    def set(self) -> None:
        self._wanted.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._wanted.wait()
            self._wanted.clear()
            try:
                await self._action()
            except Exception as exc:
                log.warning(f"{self._what} failed", error=f"{type(exc).__name__}: {exc}")
