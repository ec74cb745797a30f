"""Drop aggregate_sequences.lease_until's index: the relay's claim now reads each due row's
lease through the aggregate's primary key (controlplane/data/outbox/relay_store.py).

Under 1,000 events/s the planner used this index for a "leased now" anti-join, scanning
every leased aggregate once per due row (0.1 s a claim). Without it, a lease taken or
released no longer updates an index, so the update can be HOT.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 06:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_aggregate_sequences_lease_until", table_name="aggregate_sequences")


def downgrade() -> None:
    op.create_index("ix_aggregate_sequences_lease_until", "aggregate_sequences", ["lease_until"])
