"""run delivery columns (dispatch event, ack subject, stream sequence, heartbeat) and the
credentials of sandboxes

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 20:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dispatch_event_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("delivery_reply", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("delivery_seq", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_runs_held",
            ["phase"],
            unique=False,
            postgresql_where=sa.text("delivery_reply IS NOT NULL"),
            sqlite_where=sa.text("delivery_reply IS NOT NULL"),
        )
    op.create_table(
        "agent_credentials",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("agent_id", sa.String(length=36), nullable=False),
        sa.Column("agent", sa.String(length=253), nullable=False),
        sa.Column("sandbox_id", sa.String(length=253), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("agent_credentials", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_agent_credentials_agent_id"), ["agent_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("agent_credentials", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agent_credentials_agent_id"))
    op.drop_table("agent_credentials")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_held")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("heartbeat_at")
        batch_op.drop_column("delivery_seq")
        batch_op.drop_column("delivery_reply")
        batch_op.drop_column("dispatch_event_id")
