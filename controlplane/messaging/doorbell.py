"""How the relay's cycle loops learn that an event was committed (a PostgreSQL NOTIFY).

Each ring wakes one idle loop, not all of them: at a few events per second, waking every
loop made each event cost one claim per loop, all but one of them empty. A ring that finds
no loop idle stays `unanswered` until a loop starts its next cycle, so none is lost.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Doorbell:
    """`ring()` from the NOTIFY callback; a loop calls `answer()` as it starts a cycle and
    `waiter()` (a future, registered at once) before it waits."""

    def __init__(self) -> None:
        self.rings = 0  # every ring so far: a loop compares it across its cycle
        self.unanswered = False  # rung while no loop was waiting and none has cycled since
        self._waiters: deque[asyncio.Future[None]] = deque()

    def ring(self, *, everyone: bool = False) -> None:
        """An event was committed (`everyone`: anything may have been, wake every loop)."""
        self.rings += 1
        woken = False
        while self._waiters and (everyone or not woken):
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                woken = True
        if everyone or not woken:
            self.unanswered = True

    def answer(self) -> int:
        """A cycle starts: it sees every commit rung so far. Returns `rings` as of now."""
        self.unanswered = False
        return self.rings

    def waiter(self) -> asyncio.Future[None]:
        """A future the next ring completes (registered before the caller's first await, so
        no ring can fall between the caller's last check and its wait)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter
