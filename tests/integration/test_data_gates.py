"""The data gates of the architecture: migrations reversible on both databases, models and
migrations in step, event schemas compatible with the last release."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from controlplane.data import migrate
from controlplane.data.engine import create_engine
from controlplane.data.tables import metadata
from controlplane.domain.events.registry import load_builtin_schemas

SNAPSHOT = Path(__file__).resolve().parents[1] / "snapshots" / "event-schemas-0.1.0.json"


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    await engine.dispose()
    return names - {"alembic_version"}


async def _drift(url: str) -> list:
    def diff(conn: Connection) -> list:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(ctx, metadata)

    engine = create_engine(url)
    async with engine.connect() as conn:
        changes = await conn.run_sync(diff)
    await engine.dispose()
    return changes


async def _round_trip(url: str) -> None:
    await asyncio.to_thread(migrate.upgrade, url)
    assert await _tables(url) == set(metadata.tables)
    await asyncio.to_thread(migrate.downgrade, url)
    assert await _tables(url) == set()
    await asyncio.to_thread(migrate.upgrade, url)
    assert await _tables(url) == set(metadata.tables)
    assert await _drift(url) == [], "models and migrations drifted: autogenerate a revision"


@pytest.mark.postgres
async def test_migrations_upgrade_downgrade_upgrade_on_empty_postgresql(pg_url: str) -> None:
    # pg_url is already migrated: start from empty.
    await asyncio.to_thread(migrate.downgrade, pg_url)
    assert await _tables(pg_url) == set()
    await _round_trip(pg_url)


async def test_migrations_upgrade_downgrade_upgrade_on_empty_sqlite(tmp_path: Path) -> None:
    await _round_trip(f"sqlite+aiosqlite:///{tmp_path / 'gate.db'}")


def test_event_schemas_stay_compatible_with_the_last_release() -> None:
    released = json.loads(SNAPSHOT.read_text())
    assert released, "the snapshot holds the released schemas"
    assert load_builtin_schemas().check_against_snapshot(released) == []


@pytest.mark.postgres
async def test_migration_0003_derives_scheduling_columns_for_existing_agents(pg_url: str) -> None:
    await asyncio.to_thread(migrate.downgrade, pg_url, "0002")
    engine = create_engine(pg_url)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO tenants (name, quota, created_at, updated_at)"
                " VALUES ('t', '{}', now(), now())"
            )
        )
        await conn.execute(
            text(
                "INSERT INTO agents (id, tenant, name, spec, status, phase, created_at, updated_at)"
                " VALUES ('a1', 't', 'old', :spec, :status, 'Ready', now(), now())"
            ),
            {
                "spec": json.dumps(
                    {
                        "image": "busybox",
                        "priority": 7,
                        "resources": {"limits": {"cpu": "1500m", "memory": "1Gi"}},
                    }
                ),
                "status": json.dumps({"phase": "Ready", "node": "node-3"}),
            },
        )
    await asyncio.to_thread(migrate.upgrade, pg_url)
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT priority, request_cpu_millis, request_memory_bytes, node FROM agents")
            )
        ).one()
    await engine.dispose()
    assert tuple(row) == (7, 1500, 2**30, "node-3"), "requests default to limits"
