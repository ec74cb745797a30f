"""The leak sweep: remove sandboxes that no agent owns.

A sandbox's id is recorded (Scheduled → Starting) before the sandbox is created, so the ids
agents record are every sandbox they can own; anything else a runtime lists was left by a
crash between recording and cleanup (architecture/state-machines.md, Leaks). Run at start and
on every resync.
"""

from __future__ import annotations

import structlog

from controlplane.data.repositories.agent_reads import AgentReads
from controlplane.runtimes.base import Runtime

log = structlog.get_logger("agentos.controller")


async def remove_leaked_sandboxes(reads: AgentReads, runtimes: list[Runtime]) -> int:
    """Remove, from each of `runtimes`, the sandboxes no agent records. Returns how many."""
    owned = await reads.sandbox_ids()
    removed = 0
    for runtime in runtimes:
        for sid in await runtime.list_sandboxes():
            if sid not in owned:
                await runtime.remove(sid)
                removed += 1
    if removed:
        log.info("removed leaked sandboxes", count=removed)
    return removed
