"""Async engines for PostgreSQL (asyncpg) and SQLite (aiosqlite), configured alike."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def is_postgres(url: str) -> bool:
    """Whether `url` names a PostgreSQL database."""
    return make_url(url).get_backend_name() == "postgresql"


def create_engine(url: str, *, pool_size: int = 20, echo: bool = False) -> AsyncEngine:
    """An AsyncEngine for `url`.

    SQLite gets WAL journaling, foreign keys on and a 30 s busy timeout, so that the API, the
    controller and the relay can share one file; PostgreSQL gets a pool of `pool_size`
    connections and as many overflow ones (closed on checkin, so a pool smaller than the
    concurrent checkouts opens a connection per request beyond it: a PostgreSQL backend fork
    and fresh prepared statements each).
    """
    kwargs: dict[str, Any] = {"echo": echo}
    if is_postgres(url):
        # No pre-ping (a round trip per checkout): a connection lost to a restart fails its
        # statement, SQLAlchemy invalidates the pool, and every caller retries its step.
        kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800)
    else:
        kwargs.update(connect_args={"timeout": 30})
    engine = create_async_engine(url, **kwargs)
    if not is_postgres(url):

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

    return engine
