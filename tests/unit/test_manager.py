"""The controller machinery: a Manager's workers, requeue-after and backoff, the version
poll and the trigger (controlplane/controllers/machinery/)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from controlplane.controllers.machinery.manager import Manager, Reconciler
from controlplane.controllers.machinery.sources import Trigger, VersionPoller
from controlplane.controllers.machinery.workqueue import RateLimiter


class Scripted:
    """Answers each reconcile of a key with the next of its outcomes (then None)."""

    def __init__(self, outcomes: dict[str, list[float | Exception | None]]) -> None:
        self.outcomes = outcomes
        self.calls: list[str] = []
        self.seen = asyncio.Event()

    async def reconcile(self, key: str) -> float | None:
        self.calls.append(key)
        self.seen.set()
        script = self.outcomes.get(key, [])
        outcome = script.pop(0) if script else None
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


@contextlib.asynccontextmanager
async def running(manager: Manager) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    try:
        yield
    finally:
        stop.set()
        await task


async def until(check: Callable[[], bool], timeout_s: float = 2.0) -> None:
    async def wait() -> None:
        while not check():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(wait(), timeout_s)


async def test_a_returned_delay_requeues_the_key_and_none_leaves_it_done() -> None:
    reconciler = Scripted({"a": [0.01, None]})
    manager = Manager(reconciler, workers=2)
    done: list[str] = []
    manager.on_reconciled = done.append
    async with running(manager):
        manager.notify("a")
        await until(lambda: len(reconciler.calls) == 2)
        await asyncio.sleep(0.05)
    assert reconciler.calls == ["a", "a"], "once for the delay, then not again"
    assert done == ["a", "a"]


async def test_an_exception_requeues_with_the_limiters_backoff_and_success_forgets_it() -> None:
    limiter = RateLimiter(base_s=0.01, max_s=1)
    reconciler = Scripted({"a": [RuntimeError("boom"), RuntimeError("boom"), None]})
    manager = Manager(reconciler, workers=1, limiter=limiter)
    done: list[str] = []
    manager.on_reconciled = done.append
    async with running(manager):
        manager.notify("a")
        await until(lambda: len(reconciler.calls) == 3)
    assert done == ["a"], "on_reconciled only after the reconcile that did not raise"
    assert limiter.when("a") == 0.01, "forgotten after the success"


async def test_a_quiet_exception_is_retried_like_any_other() -> None:
    class Raced(Exception):
        pass

    reconciler = Scripted({"a": [Raced("moved first"), None]})
    manager = Manager(reconciler, workers=1, quiet=(Raced,), limiter=RateLimiter(0.01))
    async with running(manager):
        manager.notify("a")
        await until(lambda: len(reconciler.calls) == 2)


async def test_a_key_is_never_reconciled_by_two_workers_at_once() -> None:
    active: set[str] = set()
    overlaps: list[str] = []

    class Slow:
        calls = 0

        async def reconcile(self, key: str) -> float | None:
            if key in active:
                overlaps.append(key)
            active.add(key)
            await asyncio.sleep(0.02)
            active.discard(key)
            Slow.calls += 1
            return None

    reconciler: Reconciler = Slow()
    manager = Manager(reconciler, workers=4)
    async with running(manager):
        for _ in range(5):
            manager.notify("a")
            await asyncio.sleep(0.005)
        await until(lambda: Slow.calls >= 2)
    assert overlaps == []


async def test_runnables_run_beside_the_workers_until_stop() -> None:
    started = asyncio.Event()
    cancelled: list[bool] = []

    async def loop(stop: asyncio.Event) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    manager = Manager(Scripted({}), workers=1)
    manager.add(loop)
    async with running(manager):
        await asyncio.wait_for(started.wait(), 2)
    assert cancelled == [True]


async def test_the_poll_enqueues_only_keys_whose_version_moved_unless_resyncing() -> None:
    versions = {"a": 1, "b": 1}
    queued: list[str] = []

    async def list_versions() -> dict[str, int]:
        return dict(versions)

    poller = VersionPoller(list_versions, queued.append, interval_s=1, resync_s=30)
    poller.observe("a", 1)
    poller.observe("b", 1)
    versions["b"] = 2  # written by another process
    await poller.poll(enqueue_all=False)
    assert queued == ["b"]
    queued.clear()
    await poller.poll(enqueue_all=True)
    assert sorted(queued) == ["a", "b"]


async def test_the_poll_forgets_keys_that_are_gone() -> None:
    versions = {"a": 1}
    queued: list[str] = []

    async def list_versions() -> dict[str, int]:
        return dict(versions)

    poller = VersionPoller(list_versions, queued.append, interval_s=1, resync_s=30)
    poller.observe("a", 1)
    del versions["a"]
    await poller.poll(enqueue_all=False)
    versions["a"] = 1  # the same key again, at the version last seen
    await poller.poll(enqueue_all=False)
    assert queued == ["a"], "not remembered from before it was gone"


async def test_a_trigger_set_many_times_runs_its_action_once_per_wake_up() -> None:
    runs: list[int] = []
    gate = asyncio.Event()

    async def action() -> None:
        runs.append(1)
        await gate.wait()

    trigger = Trigger(action, "test")
    stop = asyncio.Event()
    task = asyncio.create_task(trigger.run(stop))
    trigger.set()
    await until(lambda: len(runs) == 1)
    for _ in range(10):
        trigger.set()  # while the first run is in flight: one more run
    gate.set()
    await until(lambda: len(runs) == 2)
    await asyncio.sleep(0.02)
    assert len(runs) == 2
    stop.set()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
