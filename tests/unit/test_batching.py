"""Batcher: concurrent calls coalesce into one run; each caller gets its own outcome."""

from __future__ import annotations

import asyncio

import pytest

from controlplane.controllers.machinery.batching import Batcher


async def test_concurrent_submits_share_one_run_and_get_their_own_results() -> None:
    runs: list[list[int]] = []

    async def run(items: list[int]) -> list[int]:
        runs.append(items)
        return [i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(run)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(5)))
    assert results == [0, 10, 20, 30, 40]
    assert runs == [[0, 1, 2, 3, 4]]


async def test_an_item_error_reaches_only_its_caller() -> None:
    async def run(items: list[int]) -> list[int | BaseException]:
        return [ValueError(f"bad {i}") if i == 2 else i for i in items]

    batcher: Batcher[int, int] = Batcher(run)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(4)), return_exceptions=True)
    assert results[:2] == [0, 1] and results[3] == 3
    assert isinstance(results[2], ValueError) and str(results[2]) == "bad 2"


async def test_a_failed_run_fails_every_caller_of_its_batch_and_the_next_batch_runs() -> None:
    calls = 0

    async def run(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database gone")
        return items

    batcher: Batcher[int, int] = Batcher(run)
    first = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in first)
    assert await batcher.submit(7) == 7


async def test_callers_arriving_during_a_run_form_the_next_batch_within_the_size_limit() -> None:
    release = asyncio.Event()
    runs: list[list[int]] = []

    async def run(items: list[int]) -> list[int]:
        runs.append(items)
        if len(runs) == 1:
            await release.wait()
        return items

    batcher: Batcher[int, int] = Batcher(run, max_batch=2)
    first = asyncio.ensure_future(batcher.submit(0))
    while not runs:
        await asyncio.sleep(0)
    later = [asyncio.ensure_future(batcher.submit(i)) for i in (1, 2, 3)]
    release.set()
    assert await asyncio.gather(first, *later) == [0, 1, 2, 3]
    assert runs == [[0], [1, 2], [3]]


async def test_close_cancels_the_callers_of_the_batch_in_flight() -> None:
    started = asyncio.Event()

    async def run(items: list[int]) -> list[int]:
        started.set()
        await asyncio.Event().wait()
        return items

    batcher: Batcher[int, int] = Batcher(run)
    waiting = asyncio.ensure_future(batcher.submit(1))
    await started.wait()
    await batcher.close()
    with pytest.raises(asyncio.CancelledError):
        await waiting
