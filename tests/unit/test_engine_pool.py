"""The PostgreSQL pool's size comes from AGENTOS_DB_POOL_SIZE (architecture/scaling.md, API)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from controlplane.bootstrap import Container
from controlplane.config import Settings

URL = "postgresql+asyncpg://agentos@127.0.0.1:1/none"  # never connected: pools open lazily


def test_the_pool_keeps_the_configured_connections_and_as_many_overflow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTOS_DB_POOL_SIZE", "32")
    pool = Container(Settings(database_url=URL)).engine.sync_engine.pool
    assert pool.size() == 32  # type: ignore[attr-defined]
    assert pool._max_overflow == 32  # type: ignore[attr-defined]


def test_a_pool_of_no_connection_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="db_pool_size"):
        Settings(database_url=URL, db_pool_size=0)
