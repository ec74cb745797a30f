"""Gauges read from the system of record: agents by phase (`agentos_agents{phase}`) and runs
not yet ended by phase (`agentos_runs_in_flight{phase}`).

Counted in the database, not kept in memory, so the gauge is true across controller
restarts and whichever process wrote the agents. The counts come through ports
(`CountByPhase`, e.g. `controlplane.data.repositories.agents.phase_counter`, and
`CountRunsByPhase`), so observability imports nothing but the domain.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from controlplane.domain.agents.lifecycle import Phase
from controlplane.domain.runs.lifecycle import RunPhase
from controlplane.observability import metrics, run_metrics

log = structlog.get_logger("agentos.metrics")

CountByPhase = Callable[[], Awaitable[dict[Phase, int]]]
"""How many agents are in each phase (a phase absent from the answer has none)."""

CountRunsByPhase = Callable[[], Awaitable[dict[RunPhase, int]]]
"""How many runs are in each non-terminal phase (absent: none; terminal phases ignored)."""


async def refresh_agent_phases(count_by_phase: CountByPhase) -> dict[str, int]:
    """Set `agentos_agents{phase}` for every phase (0 when none); returns the counts by
    phase name. Raises what `count_by_phase` raises (the gauges keep their last values)."""
    counted = await count_by_phase()
    counts = {p.value: counted.get(p, 0) for p in Phase}
    for phase, n in counts.items():
        metrics.AGENTS.labels(phase).set(n)
    return counts


async def refresh_run_phases(count_runs_by_phase: CountRunsByPhase) -> dict[str, int]:
    """Set `agentos_runs_in_flight{phase}` for every non-terminal phase (0 when none);
    returns the counts by phase name. Raises what `count_runs_by_phase` raises."""
    counted = await count_runs_by_phase()
    run_metrics.set_runs_in_flight(counted)
    return {p.value: counted.get(p, 0) for p in run_metrics.IN_FLIGHT_PHASES}


async def run_inventory(
    count_by_phase: CountByPhase,
    stop: asyncio.Event,
    interval_s: float = 5.0,
    *,
    count_runs_by_phase: CountRunsByPhase | None = None,
) -> None:
    """Refresh the inventory gauges every `interval_s` seconds until `stop` is set (the run
    gauges too when `count_runs_by_phase` is given)."""
    while not stop.is_set():
        try:
            await refresh_agent_phases(count_by_phase)
            if count_runs_by_phase is not None:
                await refresh_run_phases(count_runs_by_phase)
        except Exception as exc:  # the database went away: the next round tries again
            log.warning("inventory refresh failed", error=f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
