"""End-to-end tests use the integration fixtures (real services)."""

from tests.integration.conftest import agentos_env, nc, pg_engine, pg_url  # noqa: F401
