"""What the runs API tests share: a database URL on both engines, agents with `spec.runs`,
counting what was written, and moving a run along as the gateway would (through the service
layer and the repositories: the gateway is not part of these tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from controlplane.data import migrate
from controlplane.data.tables import outbox, runs
from controlplane.domain.runs.lifecycle import RunPhase, RunReason
from controlplane.domain.runs.steps import Step
from controlplane.service import runs as svc
from tests.integration.api_harness import MANIFEST, Api


@pytest.fixture(name="db_url", params=["postgres", "sqlite"])
def db_url_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database on real PostgreSQL, and on SQLite."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    url = f"sqlite+aiosqlite:///{tmp_path / 'api.db'}"
    migrate.upgrade(url)
    return url


def agent(name: str, **runs_spec: Any) -> dict[str, Any]:
    spec = {**MANIFEST["spec"], "runs": runs_spec} if runs_spec else MANIFEST["spec"]
    return {**MANIFEST, "metadata": {"name": name}, "spec": spec}


async def count_runs(api: Api) -> int:
    async with api.container.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(runs))).scalar_one())


async def run_events_written(api: Api) -> list[tuple[str, str, str | None]]:
    """(event_type, aggregate_id, agent_id) of every run event in the outbox, in id order."""
    async with api.container.engine.connect() as conn:
        rows = await conn.execute(
            select(outbox.c.event_type, outbox.c.aggregate_id, outbox.c.agent_id)
            .where(outbox.c.aggregate_type == "run")
            .order_by(outbox.c.id)
        )
        return [(r.event_type, r.aggregate_id, r.agent_id) for r in rows]


async def advance(api: Api, tenant: str, name: str, to: RunPhase, reason: RunReason) -> None:
    """Move a run one step of its lifecycle, as the gateway or the run controller would."""
    async with api.container.uow("system:test") as uow:
        record = await uow.runs.get(tenant, name)
        attempt = 1 if to is RunPhase.DISPATCHED and record.status.attempt == 0 else None
        changes = {"attempt": attempt} if attempt else {}
        await svc.transition(uow, record, to, reason, **changes)
        await uow.commit()


async def record_step(api: Api, tenant: str, run: str, call_id: str, **fields: Any) -> None:
    """Journal a step with its `run.step_recorded` event, as the gateway would."""
    step = Step.model_validate(
        {
            "callId": call_id,
            "type": "tool",
            "name": "calculator",
            "status": "succeeded",
            "startedAt": "2026-01-01T00:00:00Z",
            "endedAt": "2026-01-01T00:00:01Z",
            **fields,
        }
    )
    async with api.container.uow("system:test") as uow:
        record = await uow.runs.get(tenant, run)
        await uow.runs.record_step(record.id, step)
        payload = {"name": run, "agent": record.agent, "step": step.model_dump(mode="json")}
        await uow.outbox.add(svc.run_event(record, "run.step_recorded", payload))
        await uow.commit()
