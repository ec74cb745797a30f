"""The relational schema (SQLAlchemy Core), the single source for Alembic migrations.

Portable between PostgreSQL (asyncpg) and SQLite (aiosqlite): JSON is JSONB on PostgreSQL,
big integer keys are plain INTEGER on SQLite (its rowid alias), times are timezone-aware.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Json = JSON().with_variant(JSONB(), "postgresql")
BigId = BigInteger().with_variant(Integer(), "sqlite")
Time = DateTime(timezone=True)


def _id() -> Column[int]:
    return Column("id", BigId, primary_key=True, autoincrement=True)


tenants = Table(
    "tenants",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("quota", Json, nullable=False, server_default=text("'{}'")),
    Column("resource_version", BigInteger, nullable=False, server_default=text("1")),
    Column("created_at", Time, nullable=False),
    Column("updated_at", Time, nullable=False),
)

agents = Table(
    "agents",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant", String(63), ForeignKey("tenants.name"), nullable=False),
    Column("name", String(253), nullable=False),
    Column("labels", Json, nullable=False, server_default=text("'{}'")),
    Column("annotations", Json, nullable=False, server_default=text("'{}'")),
    Column("spec", Json, nullable=False),
    Column("status", Json, nullable=False, server_default=text("'{}'")),
    Column("phase", String(32), nullable=False),
    Column("generation", BigInteger, nullable=False, server_default=text("1")),
    Column("resource_version", BigInteger, nullable=False, server_default=text("1")),
    Column("created_at", Time, nullable=False),
    Column("updated_at", Time, nullable=False),
    Column("deletion_requested_at", Time, nullable=True),
    # Derived from spec and status on every write, so the scheduler sums reservations in SQL
    # instead of parsing every agent (requests in millicores and bytes; node from status).
    Column("priority", Integer, nullable=False, server_default=text("0")),
    Column("request_cpu_millis", BigInteger, nullable=False, server_default=text("0")),
    Column("request_memory_bytes", BigInteger, nullable=False, server_default=text("0")),
    Column("node", String(253), nullable=True),
    UniqueConstraint("tenant", "name"),
    Index(None, "phase"),
)

# A label selector's `key=value` is JSONB containment on PostgreSQL, served by this index
# (controlplane/data/repositories/labels.py); a plain index on SQLite.
Index(
    "ix_agents_labels",
    agents.c.labels,
    postgresql_using="gin",
    postgresql_ops={"labels": "jsonb_path_ops"},
)

agent_transitions = Table(
    "agent_transitions",
    metadata,
    _id(),
    Column("agent_id", String(36), nullable=False, index=True),
    Column("tenant", String(63), nullable=False),
    Column("from_phase", String(32), nullable=True),
    Column("to_phase", String(32), nullable=False),
    Column("reason", String(128), nullable=False),
    Column("message", Text, nullable=False, server_default=""),
    Column("event_id", String(36), nullable=True),
    Column("occurred_at", Time, nullable=False),
)

# Per-aggregate event sequence, and the relay's lease on the aggregate
# (adr/0003-outbox-relay-design.md): a writer
# increments `last_sequence` under the row lock; a relay claims the row FOR UPDATE SKIP LOCKED
# and leases it, so one relay at a time publishes an aggregate's events, in order.
aggregate_sequences = Table(
    "aggregate_sequences",
    metadata,
    Column("aggregate_type", String(64), primary_key=True),
    Column("aggregate_id", String(64), primary_key=True),
    Column("last_sequence", BigInteger, nullable=False),
    Column("lease_owner", String(128), nullable=True),
    Column("lease_until", Time, nullable=True),
)

outbox = Table(
    "outbox",
    metadata,
    _id(),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("event_type", String(128), nullable=False),
    Column("schema_version", Integer, nullable=False),
    Column("aggregate_type", String(64), nullable=False),
    Column("aggregate_id", String(64), nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("tenant_id", String(63), nullable=False),
    Column("agent_id", String(36), nullable=True),
    Column("trace_id", String(32), nullable=True),
    Column("traceparent", String(64), nullable=True),
    Column("occurred_at", Time, nullable=False),
    Column("payload", Json, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("replay_count", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", Time, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("stream_sequence", BigInteger, nullable=True),
    Column("published_at", Time, nullable=True),
    Column("acknowledged_at", Time, nullable=True),
    # The envelope as published (controlplane/data/outbox/wire.py), encoded once by the
    # writer; NULL in rows written before migration 0010 (the relay encodes those itself).
    Column("encoded_envelope", LargeBinary, nullable=True),
    UniqueConstraint("aggregate_type", "aggregate_id", "sequence"),
    Index(None, "state", "next_attempt_at"),
    Index(None, "occurred_at"),
)

# The relay's claim scans unpublished rows in id order; this partial index keeps that scan
# small however many published rows the table holds (and whatever the planner's statistics).
Index(
    "ix_outbox_unpublished_id",
    outbox.c.id,
    postgresql_where=outbox.c.state == "OutboxWritten",
    sqlite_where=outbox.c.state == "OutboxWritten",
)

# What retention purged from the outbox (controlplane/data/retention.py): the highest id
# deleted, so that a watch resuming from an older resourceVersion can answer 410 Gone.
retention_marks = Table(
    "retention_marks",
    metadata,
    Column("table_name", String(63), primary_key=True),
    Column("purged_through_id", BigInteger, nullable=False),
    Column("purged_at", Time, nullable=False),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    _id(),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("source", String(128), nullable=False),
    Column("reason", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("envelope", Json, nullable=False),
    Column("dead_at", Time, nullable=False),
    Column("requeued_at", Time, nullable=True),
)

audit_log = Table(
    "audit_log",
    metadata,
    _id(),
    Column("occurred_at", Time, nullable=False),
    Column("principal", String(128), nullable=False),
    Column("tenant", String(63), nullable=True),
    Column("action", String(64), nullable=False),
    Column("resource", String(300), nullable=False),
    Column("event_id", String(36), nullable=True),
    Column("details", Json, nullable=False, server_default=text("'{}'")),
    Index(None, "tenant", "occurred_at"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("tenant", String(63), primary_key=True),
    Column("principal", String(128), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("response_status", Integer, nullable=True),
    Column("response_body", Json, nullable=True),
    Column("created_at", Time, nullable=False),
    Column("expires_at", Time, nullable=False, index=True),
)

inbox = Table(
    "inbox",
    metadata,
    Column("consumer", String(128), primary_key=True),
    Column("event_id", String(36), primary_key=True),
    Column("received_at", Time, nullable=False),
)

# Bearer tokens of the API (architecture/api-compatibility.md). Only the SHA-256 of a token is
# stored (see
# controlplane/service/tokens.py for why a fast hash is right for random tokens); `id` is
# the token's public name, for listing and revocation. A token grants `role` in `tenant`, or
# is a platform admin's (both NULL).
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("principal", String(128), nullable=False),
    Column("tenant", String(63), nullable=True, index=True),
    Column("role", String(16), nullable=True),
    Column("platform_admin", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", Time, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("expires_at", Time, nullable=True),
    Column("revoked_at", Time, nullable=True),
)

# Runs: the work given to agents (controlplane/domain/runs/). `phase`, `attempt` and
# `deadline_at` (creation + spec.timeoutSeconds) are derived from spec and status on every
# write, so the reconciler finds runs to time out, and counts runs in flight, in SQL.
runs = Table(
    "runs",
    metadata,
    Column("id", String(36), primary_key=True),
    # A tenant's deletion takes its runs with it; the agent is named by uid and by name
    # without a foreign key: a run outlives its agent's row.
    Column("tenant", String(63), ForeignKey("tenants.name", ondelete="CASCADE"), nullable=False),
    Column("agent_id", String(36), nullable=False),
    Column("agent", String(253), nullable=False),
    Column("name", String(253), nullable=False),
    Column("labels", Json, nullable=False, server_default=text("'{}'")),
    Column("spec", Json, nullable=False),
    Column("status", Json, nullable=False),
    Column("phase", String(32), nullable=False),
    Column("attempt", Integer, nullable=False, server_default=text("0")),
    Column("resource_version", BigInteger, nullable=False, server_default=text("1")),
    Column("created_at", Time, nullable=False),
    Column("updated_at", Time, nullable=False),
    Column("deadline_at", Time, nullable=False),
    # Dispatch and delivery (architecture/runs.md): the outbox event of the dispatch
    # message, and the JetStream delivery the gateway holds — its ack subject (any gateway
    # may ack, extend or nak it), its stream sequence, and the agent's last heartbeat.
    Column("dispatch_event_id", String(36), nullable=True),
    Column("delivery_reply", String(255), nullable=True),
    Column("delivery_seq", BigInteger, nullable=True),
    Column("heartbeat_at", Time, nullable=True),
    UniqueConstraint("tenant", "name"),
    Index(None, "tenant", "created_at", "id"),
    # The runs of one agent, newest first (GET …/agents/{name}/runs).
    Index(None, "tenant", "agent", "created_at", "id"),
    Index(None, "agent_id", "phase"),
    Index(None, "phase", "deadline_at"),
    # Retention: the runs that ended before a cutoff (controlplane/data/retention.py).
    Index(None, "phase", "updated_at"),
)

# The run controller looks every pass for the runs whose delivery a sandbox holds; this
# partial index keeps that a scan of the few held ones, however many runs the table holds.
Index(
    "ix_runs_held",
    runs.c.phase,
    postgresql_where=runs.c.delivery_reply.is_not(None),
    sqlite_where=runs.c.delivery_reply.is_not(None),
)

# The step journal: one row per (run, callId), first write wins, so a step recorded again
# after a redelivery keeps its first output (exactly-once effects). `step` is the whole
# Step document; the other columns are for queries. Journal order is `id` order.
run_steps = Table(
    "run_steps",
    metadata,
    _id(),
    Column("run_id", String(36), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("call_id", String(200), nullable=False),
    Column("parent_call_id", String(200), nullable=True),
    Column("type", String(16), nullable=False),
    Column("name", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("step", Json, nullable=False),
    Column("recorded_at", Time, nullable=False),
    UniqueConstraint("run_id", "call_id"),
)

# The latest checkpoint of each run (`run.checkpoint(state)`); the next attempt starts there.
run_checkpoints = Table(
    "run_checkpoints",
    metadata,
    Column("run_id", String(36), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("state", Json, nullable=True),
    Column("attempt", Integer, nullable=False),
    Column("saved_at", Time, nullable=False),
)

# The credentials of sandboxes (architecture/runs.md): one per sandbox, scoped to its agent,
# only their SHA-256 stored; revoked when the sandbox goes. They open the agent gateway,
# never the API.
agent_credentials = Table(
    "agent_credentials",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("tenant", String(63), nullable=False),
    Column("agent_id", String(36), nullable=False, index=True),
    Column("agent", String(253), nullable=False),
    Column("sandbox_id", String(253), nullable=False),
    Column("created_at", Time, nullable=False),
    Column("revoked_at", Time, nullable=True),
)

# A run's webhook (architecture/runs.md, Notify): one per run, its delivery record. The
# notifier claims a due one by moving `due_at` past its lease, so a notifier that dies
# mid-call leaves it due again; `delivered_at` is set once the receiver answered 2xx.
run_notifications = Table(
    "run_notifications",
    metadata,
    Column("run_id", String(36), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("tenant", String(63), nullable=False),
    Column("url", String(2048), nullable=False),
    Column("secret", String(256), nullable=True),
    # `run` (our event body) or `a2a` (an A2A StreamResponse, with its notification token).
    Column("format", String(16), nullable=False, server_default=text("'run'")),
    Column("token", String(256), nullable=True),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("due_at", Time, nullable=False),
    Column("created_at", Time, nullable=False),
    Column("delivered_at", Time, nullable=True),
    Column("gave_up_at", Time, nullable=True),
    Column("last_error", String(1000), nullable=True),
)

# The notifier's scan: only the notifications still to deliver.
Index(
    "ix_run_notifications_due",
    run_notifications.c.due_at,
    postgresql_where=run_notifications.c.delivered_at.is_(None)
    & run_notifications.c.gave_up_at.is_(None),
    sqlite_where=run_notifications.c.delivered_at.is_(None)
    & run_notifications.c.gave_up_at.is_(None),
)

# Model providers of a tenant (architecture/model-gateway.md): `spec` holds the upstream, the
# credential's reference (never a secret), models, pricing and limits.
model_providers = Table(
    "model_providers",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant", String(63), ForeignKey("tenants.name", ondelete="CASCADE"), nullable=False),
    Column("name", String(63), nullable=False),
    Column("spec", Json, nullable=False),
    Column("resource_version", BigInteger, nullable=False, server_default=text("1")),
    Column("created_at", Time, nullable=False),
    Column("updated_at", Time, nullable=False),
    UniqueConstraint("tenant", "name"),
)
# What a tenant's model calls used, per provider and fixed budget window (window_start in
# seconds since the epoch): the budget is checked against it, and the tenant's usage read.
model_usage = Table(
    "model_usage",
    metadata,
    Column("tenant", String(63), ForeignKey("tenants.name", ondelete="CASCADE"), nullable=False),
    Column("provider", String(63), nullable=False),
    Column("window_start", BigInteger, nullable=False),
    Column("requests", BigInteger, nullable=False, server_default=text("0")),
    Column("input_tokens", BigInteger, nullable=False, server_default=text("0")),
    Column("output_tokens", BigInteger, nullable=False, server_default=text("0")),
    Column("cached_input_tokens", BigInteger, nullable=False, server_default=text("0")),
    Column("cost_usd", Numeric(20, 9), nullable=False, server_default=text("0")),
    PrimaryKeyConstraint("tenant", "provider", "window_start"),
)

# Approvals (architecture/approvals.md): a run asks a human before an action. One row per
# (run, callId): a new attempt that asks again for the same step gets the same approval.
approvals = Table(
    "approvals",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("run_id", String(36), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("tenant", String(63), nullable=False),
    Column("run_name", String(253), nullable=False),
    Column("call_id", String(200), nullable=False),
    Column("action", String(200), nullable=False),
    Column("details", Json, nullable=False),
    Column("state", String(16), nullable=False),
    Column("requested_at", Time, nullable=False),
    Column("expires_at", Time, nullable=True),
    Column("decided_at", Time, nullable=True),
    Column("decided_by", String(253), nullable=True),
    Column("edits", Json, nullable=True),
    Column("comment", Text, nullable=False, server_default=text("''")),
    UniqueConstraint("run_id", "call_id"),
    Index(None, "tenant", "state", "requested_at"),
    Index(None, "state", "expires_at"),
)
