"""Coalescing of concurrent calls into batches (group commit, as PostgreSQL's own).

Reconcile workers each read one agent and write one change; under load, hundreds do so at
once. A `Batcher` gathers the calls made while its previous batch was in flight (or in the
same turn of the event loop) and makes one call for all of them: one SELECT for many reads,
one transaction for many writes. A caller still sees its own result or its own error.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """`await batcher.submit(item)` → the result `run` gave for `item`.

    `run(items)` returns one outcome per item, in order: a result, or an exception to raise
    to that item's caller alone. If `run` itself raises, every caller of the batch gets that
    error. At most one batch runs at a time; a batch holds at most `max_batch` items.
    """

    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
        *,
        max_batch: int = 256,
    ) -> None:
        self._run = run
        self._max_batch = max_batch
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._drainer is None:
            # In a context of its own: a batch serves many callers, so it must not run in (and
            # stamp its writes with the trace of) whichever caller happened to start it.
            self._drainer = asyncio.create_task(self._drain(), context=contextvars.Context())
        return await future

    async def _drain(self) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self._waiting:
                await asyncio.sleep(0)  # callers woken in this turn join the batch
                batch = [(i, f) for i, f in self._waiting[: self._max_batch] if not f.done()]
                del self._waiting[: self._max_batch]
                if not batch:
                    continue
                try:
                    outcomes = await self._run([item for item, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            self._drainer = None
            for _, future in batch + self._waiting:  # cancelled: nobody waits forever
                if not future.done():
                    future.cancel()
            self._waiting.clear()

    async def close(self) -> None:
        """Cancel the batch in flight, if any; its callers get CancelledError."""
        if self._drainer is not None:
            self._drainer.cancel()
            await asyncio.gather(self._drainer, return_exceptions=True)
