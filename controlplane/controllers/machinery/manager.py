"""The manager around a reconciler (controller-runtime's shape; adr/0004-lifecycle-controller-
and-runtimes.md, architecture/state-machines.md).

A `Reconciler` answers one question, `reconcile(key)`: look at the world for `key`, make one
step, say when to look again. Everything else is here: N workers pulling keys from a
`WorkQueue` (an item runs on one worker at a time), the rate limiter's backoff for a
reconcile that raised, requeue-after for one that asked, and the other loops of the
controller (`Runnable`s: poll loops, triggers) started and stopped with it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from contextlib import AbstractContextManager
from typing import Any, Protocol

import structlog

from controlplane.controllers.machinery.workqueue import RateLimiter, WorkQueue

log = structlog.get_logger("agentos.controller")

Runnable = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
"""A loop run beside the workers until the event is set (`run(stop)`)."""


class Reconciler(Protocol):
    async def reconcile(self, key: str) -> float | None:
        """One step for `key`. Returns seconds until `key` should be looked at again, or
        None when nothing is pending; raises to be retried with the rate limiter's backoff."""
        ...


def _no_instrument(_key: str) -> AbstractContextManager[None]:
    return contextlib.nullcontext()


class Manager:
    """Runs `workers` concurrent reconciles of the keys in `queue`.

    A reconcile that returns `s` is requeued after `s` seconds (0: at once); None: not
    requeued (a later `notify` or poll brings it back); raising: requeued after the
    limiter's backoff for that key, which a success forgets. Exceptions of a type in
    `quiet` (lost races: someone else moved first) are logged at debug, others as
    warnings. `instrument(key)` wraps each reconcile (metrics, a trace span);
    `on_reconciled(key)` is called after each that did not raise.
    """

    def __init__(
        self,
        reconciler: Reconciler,
        *,
        workers: int,
        queue: WorkQueue | None = None,
        limiter: RateLimiter | None = None,
        quiet: tuple[type[Exception], ...] = (),
        instrument: Callable[[str], AbstractContextManager[None]] = _no_instrument,
    ) -> None:
        self._reconciler = reconciler
        self.workers = workers
        self.queue = queue if queue is not None else WorkQueue()
        self._limiter = limiter if limiter is not None else RateLimiter()
        self._quiet = quiet
        self._instrument = instrument
        self._runnables: list[Runnable] = []
        self.on_reconciled: Callable[[str], None] | None = None

    def add(self, runnable: Runnable) -> None:
        """Run `runnable(stop)` beside the workers (started by `run`, cancelled at stop)."""
        self._runnables.append(runnable)

    def notify(self, key: str) -> None:
        """Something changed about `key`: reconcile it soon (deduplicated by the queue)."""
        self.queue.add(key)

    async def run(self, stop: asyncio.Event) -> None:
        """Run the workers and runnables until `stop` is set; then cancel them and drop
        what is still queued."""
        tasks = [asyncio.create_task(self._worker(stop)) for _ in range(self.workers)]
        tasks += [asyncio.create_task(r(stop)) for r in self._runnables]
        log.info("controller started", workers=self.workers)
        try:
            await stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.queue.shutdown()
            log.info("controller stopped")

    async def _worker(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            key = await self.queue.get()
            try:
                with self._instrument(key):
                    requeue_after = await self._reconciler.reconcile(key)
            except self._quiet as exc:
                log.debug("reconcile raced", key=key, error=str(exc))
                self.queue.add_after(key, self._limiter.when(key))
            except Exception as exc:
                log.warning("reconcile failed", key=key, error=f"{type(exc).__name__}: {exc}")
                self.queue.add_after(key, self._limiter.when(key))
            else:
                self._limiter.forget(key)
                if requeue_after is not None:
                    self.queue.add_after(key, requeue_after)
                if self.on_reconciled:
                    self.on_reconciled(key)
            finally:
                self.queue.done(key)
