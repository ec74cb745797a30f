"""outbox: the envelope encoded at write time; retention marks

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 03:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: adding it rewrites nothing, however large the outbox is.
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("encoded_envelope", sa.LargeBinary(), nullable=True))
    op.create_table(
        "retention_marks",
        sa.Column("table_name", sa.String(length=63), nullable=False),
        sa.Column("purged_through_id", sa.BigInteger(), nullable=False),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("table_name", name=op.f("pk_retention_marks")),
    )


def downgrade() -> None:
    op.drop_table("retention_marks")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("encoded_envelope")
