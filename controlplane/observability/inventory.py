"""Gauges read from the system of record: agents by phase (`agentos_agents{phase}`).

Counted in the database, not kept in memory, so the gauge is true across controller
restarts and whichever process wrote the agents.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.data.tables import agents
from controlplane.domain.agents.lifecycle import Phase
from controlplane.observability import metrics

log = structlog.get_logger("agentos.metrics")


async def refresh_agent_phases(engine: AsyncEngine) -> dict[str, int]:
    """Set `agentos_agents{phase}` for every phase (0 when none); returns the counts."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(select(agents.c.phase, func.count()).group_by(agents.c.phase))
        ).all()
    counts = {p.value: 0 for p in Phase} | {str(phase): int(n) for phase, n in rows}
    for phase, n in counts.items():
        metrics.AGENTS.labels(phase).set(n)
    return counts


async def run_inventory(engine: AsyncEngine, stop: asyncio.Event, interval_s: float = 5.0) -> None:
    """Refresh the inventory gauges every `interval_s` seconds until `stop` is set."""
    while not stop.is_set():
        try:
            await refresh_agent_phases(engine)
        except Exception as exc:  # the database went away: the next round tries again
            log.warning("inventory refresh failed", error=f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
