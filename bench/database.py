"""Scratch PostgreSQL databases for benchmarks: made and migrated per run, dropped after."""

from __future__ import annotations

import asyncio
import sys
import uuid

import asyncpg
from sqlalchemy.engine import make_url

from controlplane.data import migrate


async def create_database(
    admin_dsn: str, database_url: str, prefix: str = "agentos_bench"
) -> tuple[str, str]:
    """A new migrated database named `<prefix>_<random>` on the server of `database_url`;
    returns (name, SQLAlchemy URL)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    await asyncio.to_thread(migrate.upgrade, url)
    return name, url


async def drop_database(admin_dsn: str, name: str) -> None:
    """Drop `name`, retrying for a while: someone may be restarting the shared PostgreSQL."""
    for attempt in range(30):
        try:
            admin = await asyncpg.connect(admin_dsn)
        except (OSError, asyncpg.PostgresError):
            if attempt == 29:
                print(f"could not drop database {name}: drop it by hand", file=sys.stderr)
                return
            await asyncio.sleep(1)
            continue
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
        return
