"""The data gates of the architecture: migrations reversible on both databases, models and
migrations in step, event schemas compatible with the last release."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from controlplane.data import migrate
from controlplane.data.engine import create_engine
from controlplane.data.tables import metadata
from controlplane.outbox.schema_registry import load_builtin_schemas

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
