"""A work queue with the semantics of client-go's workqueue, for asyncio.

- An item is queued at most once; an item added while it is being processed is queued
  again when `done` is called (so no change is lost and no item runs twice at once).
- `add_after` delays an add (requeue-after); the earliest pending delay wins.
- `RateLimiter` gives per-item exponential backoff for failures, forgotten on success.

Like client-go's, the queue reports its depth, adds and queueing time as metrics
(`agentos_workqueue_*{name}`).
"""

from __future__ import annotations

import asyncio
import time

from controlplane.observability import metrics


class WorkQueue:
    def __init__(self, name: str = "agents") -> None:
        self.name = name
        self._depth = metrics.WORKQUEUE_DEPTH.labels(name)
        self._adds = metrics.WORKQUEUE_ADDS.labels(name)
        self._waited = metrics.WORKQUEUE_QUEUE_DURATION.labels(name)
        self._added_at: dict[str, float] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._processing: set[str] = set()
        self._dirty: set[str] = set()
        self._timers: dict[str, tuple[float, asyncio.TimerHandle]] = {}

    def add(self, key: str) -> None:
        if key in self._processing:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        self._queued.add(key)
        self._added_at[key] = time.monotonic()
        self._queue.put_nowait(key)
        self._adds.inc()
        self._depth.inc()

    def add_after(self, key: str, delay_s: float) -> None:
        if delay_s <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay_s
        pending = self._timers.get(key)
        if pending and pending[0] <= when:
            return
        if pending:
            pending[1].cancel()
        self._timers[key] = (when, loop.call_at(when, self._fire, key))

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def get(self) -> str:
        key = await self._queue.get()
        self._queued.discard(key)
        self._depth.dec()
        self._waited.observe(time.monotonic() - self._added_at.pop(key, time.monotonic()))
        self._processing.add(key)
        return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def __len__(self) -> int:
        return len(self._queued)

    def shutdown(self) -> None:
        while not self._queue.empty():  # what is left is no longer waiting
            self._queued.discard(self._queue.get_nowait())
            self._depth.dec()
        self._added_at.clear()
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()


class RateLimiter:
    """Per-item exponential backoff: base·2^failures, capped at `max_s`."""

    def __init__(self, base_s: float = 0.05, max_s: float = 30.0) -> None:
        self.base_s = base_s
        self.max_s = max_s
        self._failures: dict[str, int] = {}

    def when(self, key: str) -> float:
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        return float(min(self.max_s, self.base_s * (2**n)))

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)
