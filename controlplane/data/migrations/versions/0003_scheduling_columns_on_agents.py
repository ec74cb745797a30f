"""scheduling columns on agents: priority, requests and node, derived from spec and status

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 13:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("priority", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
        batch_op.add_column(
            sa.Column(
                "request_cpu_millis", sa.BigInteger(), server_default=sa.text("0"), nullable=False
            )
        )
        batch_op.add_column(
            sa.Column(
                "request_memory_bytes",
                sa.BigInteger(),
                server_default=sa.text("0"),
                nullable=False,
            )
        )
        batch_op.add_column(sa.Column("node", sa.String(length=253), nullable=True))
    _backfill()


def _backfill() -> None:
    # Rows written before this revision: derive the columns from their stored documents.
    from controlplane.data.repositories.agents import scheduling_columns
    from controlplane.domain.agents.model import AgentSpec, AgentStatus

    bind = op.get_bind()
    agents = sa.table(
        "agents",
        sa.column("id", sa.String),
        sa.column("spec", sa.JSON),
        sa.column("status", sa.JSON),
        sa.column("priority", sa.Integer),
        sa.column("request_cpu_millis", sa.BigInteger),
        sa.column("request_memory_bytes", sa.BigInteger),
        sa.column("node", sa.String),
    )
    for row in bind.execute(sa.select(agents.c.id, agents.c.spec, agents.c.status)).all():
        values = scheduling_columns(
            AgentSpec.model_validate(row.spec), AgentStatus.model_validate(row.status)
        )
        bind.execute(sa.update(agents).where(agents.c.id == row.id).values(**values))


def downgrade() -> None:
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_column("node")
        batch_op.drop_column("request_memory_bytes")
        batch_op.drop_column("request_cpu_millis")
        batch_op.drop_column("priority")
