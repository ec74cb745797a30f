"""Indexes the hot queries' plans need at scale (tests/integration/test_query_plans.py):
a GIN index on agents.labels, so a list with a label selector reads the matching agents by
index instead of scanning the table; and aggregate_sequences.lease_until, so the relay's
claim finds the aggregates leased now without scanning every aggregate; and runs by
(tenant, agent, created_at, id), so an agent's runs, newest first, are an index range; and
runs by (phase, updated_at), so retention finds the runs that ended before its cutoff.

A selector's `key=value` and `key in (…)` are JSONB containment (`labels @> '{"key": "v"}'`)
on PostgreSQL, which a `jsonb_path_ops` GIN index serves; SQLite gets a plain index (its
selectors use json_extract, as before) so both schemas name the same indexes.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 03:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_agents_labels",
        "agents",
        ["labels"],
        postgresql_using="gin",
        postgresql_ops={"labels": "jsonb_path_ops"},
    )
    op.create_index("ix_aggregate_sequences_lease_until", "aggregate_sequences", ["lease_until"])
    op.create_index(
        "ix_runs_tenant_agent_created_at_id", "runs", ["tenant", "agent", "created_at", "id"]
    )
    op.create_index("ix_runs_phase_updated_at", "runs", ["phase", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_runs_phase_updated_at", table_name="runs")
    op.drop_index("ix_runs_tenant_agent_created_at_id", table_name="runs")
    op.drop_index("ix_aggregate_sequences_lease_until", table_name="aggregate_sequences")
    op.drop_index("ix_agents_labels", table_name="agents")
