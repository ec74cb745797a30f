"""Gauges read from the system of record: agents by phase (`agentos_agents{phase}`).

Counted in the database, not kept in memory, so the gauge is true across controller
restarts and whichever process wrote the agents. The count comes through a port
(`CountByPhase`, e.g. `controlplane.data.repositories.agents.phase_counter`), so
observability imports nothing but the domain.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from controlplane.domain.agents.lifecycle import Phase
from controlplane.observability import metrics

log = structlog.get_logger("agentos.metrics")

CountByPhase = Callable[[], Awaitable[dict[Phase, int]]]
"""How many agents are in each phase (a phase absent from the answer has none)."""


async def refresh_agent_phases(count_by_phase: CountByPhase) -> dict[str, int]:
    """Set `agentos_agents{phase}` for every phase (0 when none); returns the counts by
    phase name. Raises what `count_by_phase` raises (the gauges keep their last values)."""
    counted = await count_by_phase()
    counts = {p.value: counted.get(p, 0) for p in Phase}
    for phase, n in counts.items():
        metrics.AGENTS.labels(phase).set(n)
    return counts


async def run_inventory(
    count_by_phase: CountByPhase, stop: asyncio.Event, interval_s: float = 5.0
) -> None:
    """Refresh the inventory gauges every `interval_s` seconds until `stop` is set."""
    while not stop.is_set():
        try:
            await refresh_agent_phases(count_by_phase)
        except Exception as exc:  # the database went away: the next round tries again
            log.warning("inventory refresh failed", error=f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
