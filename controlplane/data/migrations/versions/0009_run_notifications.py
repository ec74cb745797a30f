"""run notifications: each run's webhook and its delivery record

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 00:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNDELIVERED = "delivered_at IS NULL AND gave_up_at IS NULL"


def upgrade() -> None:
    op.create_table(
        "run_notifications",
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("secret", sa.String(length=256), nullable=True),
        sa.Column("format", sa.String(length=16), server_default=sa.text("'run'"), nullable=False),
        sa.Column("token", sa.String(length=256), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("gave_up_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=1000), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
            name=op.f("fk_run_notifications_run_id_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_run_notifications")),
    )
    with op.batch_alter_table("run_notifications", schema=None) as batch_op:
        batch_op.create_index(
            "ix_run_notifications_due",
            ["due_at"],
            unique=False,
            postgresql_where=sa.text(_UNDELIVERED),
            sqlite_where=sa.text(_UNDELIVERED),
        )


def downgrade() -> None:
    with op.batch_alter_table("run_notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_run_notifications_due")
    op.drop_table("run_notifications")
