"""The output of an agent's sandbox, as its runtime keeps it (`Runtime.logs`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

from controlplane.data.unit_of_work import UnitOfWork
from controlplane.domain.errors import AgentNotFound
from controlplane.observability.tracing import traced
from controlplane.runtimes.base import Runtime
from controlplane.service.listing import UnitOfWorkFactory

FOLLOW_WINDOW_LINES = 1000


@traced("service.agent_logs")
async def agent_logs(
    uow: UnitOfWork, runtimes: Mapping[str, Runtime], tenant: str, name: str, tail_lines: int
) -> str:
    """The last `tail_lines` lines of the agent's sandbox output; "" while it has no sandbox
    (not scheduled yet, or removed). Raises AgentNotFound."""
    record = await uow.agents.get(tenant, name)
    sandbox_id = record.status.sandboxID
    runtime = runtimes.get(record.status.runtimeClass or record.spec.runtime.class_)
    if not sandbox_id or runtime is None:
        return ""
    return await runtime.logs(sandbox_id, tail_lines)


def new_lines(previous: Sequence[str], current: Sequence[str]) -> list[str]:
    """The lines of `current` (a tail of the output) after what `previous` (an earlier
    tail) already showed: after the longest suffix of `previous` that begins `current`."""
    for k in range(min(len(previous), len(current)), 0, -1):
        if list(previous[len(previous) - k :]) == list(current[:k]):
            return list(current[k:])
    return list(current)


async def follow_logs(
    uow_factory: UnitOfWorkFactory,
    runtimes: Mapping[str, Runtime],
    tenant: str,
    name: str,
    *,
    tail_lines: int,
    wait: Callable[[], Awaitable[bool]],
) -> AsyncIterator[str]:
    """The last `tail_lines` lines, then each new line as the sandbox writes it (polling
    its logs after each `wait()`), until `wait()` returns False or the agent is deleted.
    Raises AgentNotFound before the first line."""
    async with uow_factory() as uow:
        text = await agent_logs(uow, runtimes, tenant, name, tail_lines)
    seen = text.splitlines()
    for line in seen:
        yield line
    while await wait():
        try:
            async with uow_factory() as uow:
                text = await agent_logs(uow, runtimes, tenant, name, FOLLOW_WINDOW_LINES)
        except AgentNotFound:
            return
        current = text.splitlines()
        for line in new_lines(seen, current):
            yield line
        seen = current
