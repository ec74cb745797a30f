"""Fixtures for integration tests: a fresh migrated PostgreSQL database per test, clean
JetStream streams, and private nats-server processes for tests that stop NATS."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.data import migrate
from controlplane.data.engine import create_engine
from controlplane.messaging.streams import DLQ_STREAM, EVENTS_STREAM
from tests.conftest import service_setting
from tests.waiting import wait_until


@pytest.fixture
async def pg_url(pg_admin_dsn: str, database_url: str) -> AsyncIterator[str]:
    """A new, migrated PostgreSQL database for one test; dropped afterwards."""
    name = f"agentos_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    await asyncio.to_thread(migrate.upgrade, url)
    try:
        yield url
    finally:
        # A new connection: a test may have restarted PostgreSQL meanwhile.
        admin = await asyncpg.connect(pg_admin_dsn)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


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
    for stream in (EVENTS_STREAM, DLQ_STREAM):
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(stream)
    try:
        yield client
    finally:
        await client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """A private nats-server with JetStream, for tests that stop and restart the broker."""

    def __init__(self, store: Path) -> None:
        self.port = free_port()
        self.monitor_port = free_port()
        self.store = store
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("nats-server")
        if binary is None:
            pytest.fail("nats-server is not installed: run `make services`", pytrace=False)
        self.proc = subprocess.Popen(
            [
                binary,
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-m",
                str(self.monitor_port),
                "-js",
                "-sd",
                str(self.store),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until_port_open(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None


def wait_until_port_open(port: int, timeout_s: float = 30.0) -> None:
    """Block until 127.0.0.1:`port` accepts connections."""

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_until(listening, timeout_s, f"a listener on 127.0.0.1:{port}")


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "jetstream")
    server.start()
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


__all__ = ["NatsServer", "free_port", "service_setting", "wait_until_port_open"]


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
