"""End-to-end tests use the integration fixtures (real services), and one database of
their own per module for the control plane they start (tests/e2e/runs_plane.py)."""

from collections.abc import AsyncIterator

import pytest

from harness.postgres import create_database, drop_database
from tests.conftest import service_setting
from tests.integration.conftest import agentos_env, nc, pg_engine, pg_url  # noqa: F401


@pytest.fixture(scope="module")
async def plane_database(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A scratch PostgreSQL database for this module's control plane, dropped after it."""
    admin = service_setting("AGENTOS_PG_ADMIN_DSN", "PostgreSQL")
    short = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")[:16]
    name, url = await create_database(
        admin, service_setting("AGENTOS_DATABASE_URL", "PostgreSQL"), prefix=f"agentos_{short}"
    )
    try:
        yield url
    finally:
        await drop_database(admin, name)
