"""What differs between the two dialects the data layer runs on (PostgreSQL, SQLite)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


def dialect_insert(conn: AsyncConnection, table: Any) -> Any:
    """An INSERT that supports ON CONFLICT (`on_conflict_do_nothing`/`_do_update`) for the
    connection's dialect; PostgreSQL's on PostgreSQL, SQLite's otherwise."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)
