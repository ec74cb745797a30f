"""partial index on unpublished outbox rows

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 11:49:30.261997
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_outbox_unpublished_id",
            ["id"],
            unique=False,
            postgresql_where=sa.text("state = 'OutboxWritten'"),
            sqlite_where=sa.text("state = 'OutboxWritten'"),
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_outbox_unpublished_id",
            postgresql_where=sa.text("state = 'OutboxWritten'"),
            sqlite_where=sa.text("state = 'OutboxWritten'"),
        )
