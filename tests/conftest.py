"""Shared fixtures: connection settings of the real services started by `make services`.

The settings come from `.services/env` (written by hack/services.sh). A test that needs a
service that is not there fails, naming `make services`; it never skips
(adr/0002-real-services-in-tests.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _read_services_env() -> dict[str, str]:
    path = Path(os.environ.get("AGENTOS_SERVICES_ENV", ROOT / ".services" / "env"))
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                values[key] = value
    return values


SERVICES_ENV = _read_services_env()


def service_setting(key: str, service: str) -> str:
    """The value of `key` from `.services/env`, or fail the test naming `make services`."""
    value = os.environ.get(key) or SERVICES_ENV.get(key)
    if not value:
        pytest.fail(
            f"{service} is not available ({key} is not set): run `make services` first",
            pytrace=False,
        )
    return value


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
