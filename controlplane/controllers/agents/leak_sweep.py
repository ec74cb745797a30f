"""The leak sweep: remove sandboxes that no agent owns, and what sandboxes left behind.

A sandbox's id is recorded (Scheduled → Starting) before the sandbox is created, so the ids
agents record are every sandbox they can own; anything else a runtime lists was left by a
crash between recording and cleanup (architecture/state-machines.md, Leaks). Runtimes that
hold more than the sandbox (containerd: network namespaces, leases, firewall elements) sweep
those of every sandbox no agent records. Run at start and on every resync.
"""

from __future__ import annotations

import structlog

from controlplane.data.repositories.agent_reads import AgentReads
from controlplane.runtimes.base import Runtime
from controlplane.runtimes.capabilities import capabilities

log = structlog.get_logger("agentos.controller")


async def remove_leaked_sandboxes(reads: AgentReads, runtimes: list[Runtime]) -> int:
    """Remove, from each of `runtimes`, the sandboxes no agent records, then their
    leftovers. Returns how many sandboxes were removed."""
    owned = await reads.sandbox_ids()
    removed = swept = 0
    for runtime in runtimes:
        for sid in await runtime.list_sandboxes():
            if sid not in owned:
                await runtime.remove(sid)
                removed += 1
        if (sweeps := capabilities(runtime).sweeps) is not None:
            swept += await sweeps.sweep(set(owned))
    if removed or swept:
        log.info("removed leaked sandboxes", count=removed, leftovers=swept)
    return removed
