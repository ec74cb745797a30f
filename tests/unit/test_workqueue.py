"""The controller's work queue: dedupe, re-add while processing, delayed adds, backoff."""

from __future__ import annotations

import asyncio

from controlplane.controllers.machinery.workqueue import RateLimiter, WorkQueue


async def test_an_item_is_queued_once_and_requeued_if_added_while_processing() -> None:
    q = WorkQueue()
    q.add("a")
    q.add("a")
    assert len(q) == 1
    key = await q.get()
    q.add("a")  # changed while being reconciled
    assert len(q) == 0, "not handed out twice at once"
    q.done(key)
    assert len(q) == 1 and await q.get() == "a"


async def test_add_after_delivers_later_and_the_earliest_delay_wins() -> None:
    q = WorkQueue()
    q.add_after("a", 10)
    q.add_after("a", 0.01)
    assert await asyncio.wait_for(q.get(), 2) == "a"
    q.shutdown()


def test_rate_limiter_backs_off_exponentially_until_forgotten() -> None:
    r = RateLimiter(base_s=1, max_s=5)
    assert [r.when("a") for _ in range(5)] == [1, 2, 4, 5, 5]
    r.forget("a")
    assert r.when("a") == 1
