"""The relay's one-statement claim on PostgreSQL: the cases of tests/unit/test_relay_store.py."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.unit import test_relay_store as cases

pytestmark = [pytest.mark.postgres]


async def test_the_relay_reads_the_envelope_the_writer_encoded(pg_engine: AsyncEngine) -> None:
    await cases.test_the_relay_reads_the_envelope_the_writer_encoded(pg_engine)


async def test_a_row_without_a_stored_envelope_is_encoded_from_its_columns(
    pg_engine: AsyncEngine,
) -> None:
    await cases.test_a_row_without_a_stored_envelope_is_encoded_from_its_columns(pg_engine)
