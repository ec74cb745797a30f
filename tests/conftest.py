"""Shared fixtures: connection settings of the real services started by `make services`.

The settings come from `.services/env` (written by hack/services.sh). A test that needs a
service that is not there fails, naming `make services`; it never skips
(adr/0002-real-services-in-tests.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.services import ServiceMissing, services_env
from harness.services import service_setting as harness_setting

ROOT = Path(__file__).resolve().parents[1]


SERVICES_ENV = services_env()


def service_setting(key: str, service: str) -> str:
    """The value of `key` from `.services/env`, or fail the test naming `make services`."""
    try:
        return harness_setting(key, service)
    except ServiceMissing as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def services_env() -> dict[str, str]:
    return dict(SERVICES_ENV)


@pytest.fixture(scope="session")
def database_url() -> str:
    return service_setting("AGENTOS_DATABASE_URL", "PostgreSQL")


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    return service_setting("AGENTOS_PG_ADMIN_DSN", "PostgreSQL")


@pytest.fixture(scope="session")
def nats_url() -> str:
    return service_setting("AGENTOS_NATS_URL", "NATS JetStream")
