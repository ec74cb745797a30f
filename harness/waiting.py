"""Waiting on a condition with a deadline — the one place tests poll.

Tests never sleep for a fixed time to let something happen; they poll the condition they
need, briefly, and fail naming it when the deadline passes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

POLL_S = 0.05


def wait_until(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Call `check` until it returns a truthy value (returned); AssertionError naming `what`
    after `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(POLL_S)
    raise AssertionError(f"{what} not reached within {timeout_s}s (last: {last!r})")


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout_s: float = 60.0, what: str = "condition"
) -> Any:
    """The asynchronous `wait_until`: await `check` until it returns a truthy value."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"{what} not reached within {timeout_s}s (last: {last!r})")
