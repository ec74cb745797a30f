"""The leak sweep: remove sandboxes that no agent owns, and what sandboxes left behind.

A sandbox's id is recorded (Scheduled → Starting) before the sandbox is created, so the ids
agents record are every sandbox they can own; anything else a runtime lists was left by a
crash between recording and cleanup (architecture/state-machines.md, Leaks). Runtimes that
hold more than the sandbox (containerd: network namespaces, leases, firewall elements) sweep
those of every sandbox no agent records. Run at start and on every resync.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import structlog

from controlplane.data.repositories.agent_reads import AgentReads
from controlplane.runtimes.base import Runtime
from controlplane.runtimes.capabilities import capabilities

log = structlog.get_logger("agentos.controller")


async def remove_leaked_sandboxes(
    reads: AgentReads,
    runtimes: list[Runtime],
    pooled: Callable[[Iterable[str]], set[str]] = lambda _: set(),
) -> int:
    """Remove, from each of `runtimes`, the sandboxes no agent records and no warm pool holds
    (`pooled(listed ids)`: WarmPools.keep), then their leftovers. Returns how many sandboxes
    were removed."""
    owned = await reads.sandbox_ids()
    removed = swept = 0
    for runtime in runtimes:
        listed = await runtime.list_sandboxes()
        keep = set(owned) | pooled(listed)
        for sid in listed:
            if sid not in keep:
                await runtime.remove(sid)
                removed += 1
        if (sweeps := capabilities(runtime).sweeps) is not None:
            swept += await sweeps.sweep(keep)
    if removed or swept:
        log.info("removed leaked sandboxes", count=removed, leftovers=swept)
    return removed
