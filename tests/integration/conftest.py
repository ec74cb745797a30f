"""Fixtures for integration tests: a fresh migrated PostgreSQL database per test, clean
JetStream streams, and private nats-server processes for tests that stop NATS."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.data import migrate
from controlplane.data.engine import create_engine
from controlplane.messaging.streams import DLQ_STREAM, EVENTS_STREAM, RUNS_STREAM
from harness.nats import PrivateNats
from harness.postgres import create_database, drop_database
from harness.services import ServiceMissing
from tests.conftest import service_setting


@pytest.fixture
async def pg_url(pg_admin_dsn: str, database_url: str) -> AsyncIterator[str]:
    """A new, migrated PostgreSQL database for one test; dropped afterwards."""
    name, url = await create_database(pg_admin_dsn, database_url, prefix="agentos_test")
    try:
        yield url
    finally:
        await drop_database(pg_admin_dsn, name)


@pytest.fixture
async def pg_engine(pg_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(pg_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    """A NATS connection to the shared server with the Agent OS streams deleted first."""
    client = await nats.connect(nats_url)
    js = client.jetstream()
    for stream in (EVENTS_STREAM, DLQ_STREAM, RUNS_STREAM):
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(stream)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[PrivateNats]:
    server = PrivateNats(tmp_path / "jetstream")
    try:
        server.start()
    except ServiceMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def agentos_env(pg_url: str, nats_url: str) -> dict[str, str]:
    """Environment for an `agentos` subprocess on the test database and shared NATS."""
    env = dict(os.environ)
    env.update(AGENTOS_DATABASE_URL=pg_url, AGENTOS_NATS_URL=nats_url, AGENTOS_LOG_FORMAT="json")
    return env


__all__ = ["service_setting"]


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A migrated SQLite database (the embedded default) in the test's directory."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'agentos.db'}"
    migrate.upgrade(url)
    engine = create_engine(url)
    yield engine
    await engine.dispose()


@pytest.fixture(params=["postgres", "sqlite"])
def engine(request: pytest.FixtureRequest) -> AsyncEngine:
    """Each test using it runs on real PostgreSQL and on SQLite."""
    if request.param == "postgres":
        return request.getfixturevalue("pg_engine")
    return request.getfixturevalue("sqlite_engine")
