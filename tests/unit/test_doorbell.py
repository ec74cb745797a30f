"""The relay's doorbell: a NOTIFY wakes one idle cycle loop, and none is lost when every
loop is busy (controlplane/messaging/doorbell.py)."""

from __future__ import annotations

import asyncio

from controlplane.messaging.doorbell import Doorbell


async def test_a_ring_wakes_one_waiting_loop_not_every_one() -> None:
    bell = Doorbell()
    first, second = bell.waiter(), bell.waiter()
    bell.ring()
    await asyncio.sleep(0)
    assert first.done() and not second.done()
    assert not bell.unanswered


async def test_a_ring_with_no_loop_waiting_stays_unanswered_until_a_cycle_starts() -> None:
    bell = Doorbell()
    seen = bell.answer()
    bell.ring()
    assert bell.unanswered and bell.rings == seen + 1
    assert bell.answer() == seen + 1
    assert not bell.unanswered


async def test_a_waiter_given_up_is_passed_over() -> None:
    bell = Doorbell()
    gone, waiting = bell.waiter(), bell.waiter()
    gone.cancel()  # a loop whose wait timed out
    bell.ring()
    assert waiting.done() and not bell.unanswered


async def test_ringing_everyone_wakes_every_loop_and_the_busy_ones_too() -> None:
    bell = Doorbell()
    waiters = [bell.waiter() for _ in range(3)]
    bell.ring(everyone=True)
    assert all(w.done() for w in waiters)
    assert bell.unanswered  # a loop in its cycle now runs again as well
