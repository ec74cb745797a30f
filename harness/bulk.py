"""Bulk rows for scale benchmarks and query-plan tests: agents with their transitions,
aggregate sequences and outbox rows, runs with their steps, idempotency keys, written by
PostgreSQL itself (INSERT … SELECT over generate_series) into the repositories' tables.

Agent i (1-based) is named `agent-%07d`, has uid md5('a' || i) as a UUID, labels
`team=t<i % 10>` and `bench=scale`, and the spec and status of an agent named `template`
that must exist in the tenant first (made through the API or the service, so rows look like
what the service writes).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

AGENT_ROWS = [
    """INSERT INTO agents (id, tenant, name, labels, annotations, spec, status, phase,
         generation, resource_version, created_at, updated_at, priority, request_cpu_millis,
         request_memory_bytes, node)
       SELECT md5('a' || i)::uuid::text, t.tenant, 'agent-' || lpad(i::text, 7, '0'),
         jsonb_build_object('team', 't' || (i % 10), 'bench', 'scale'), '{}', t.spec,
         t.status, t.phase, 1, 1, now(), now(), t.priority, t.request_cpu_millis,
         t.request_memory_bytes, t.node
       FROM generate_series(1, :n) AS i,
         (SELECT * FROM agents WHERE tenant = :tenant AND name = 'template') AS t""",
    """INSERT INTO agent_transitions (agent_id, tenant, from_phase, to_phase, reason, message,
         occurred_at)
       SELECT md5('a' || i)::uuid::text, :tenant, p.f, p.t, 'Bench', '', now()
       FROM generate_series(1, :n) AS i,
         (VALUES (NULL, 'Created'), ('Created', 'Pending'), ('Pending', 'Running')) AS p(f, t)""",
    """INSERT INTO aggregate_sequences (aggregate_type, aggregate_id, last_sequence)
       SELECT 'agent', md5('a' || i)::uuid::text, 10 FROM generate_series(1, :n) AS i""",
    """INSERT INTO outbox (event_id, event_type, schema_version, aggregate_type, aggregate_id,
         sequence, tenant_id, agent_id, occurred_at, payload, state, next_attempt_at,
         published_at)
       SELECT md5('e' || i || '.' || s)::uuid::text, 'agent.phase_changed', 1, 'agent',
         md5('a' || i)::uuid::text, s, :tenant, md5('a' || i)::uuid::text, now(), '{}',
         'Published', now(), now()
       FROM generate_series(1, :n) AS i, generate_series(1, 10) AS s
       ORDER BY i, s""",
    """UPDATE outbox SET state = 'OutboxWritten', published_at = NULL
       WHERE id > (SELECT max(id) FROM outbox) - :unpublished""",
]

RUN_ROWS = [
    """INSERT INTO runs (id, tenant, agent_id, agent, name, labels, spec, status, phase,
         attempt, resource_version, created_at, updated_at, deadline_at)
       SELECT md5('r' || i)::uuid::text, :tenant, md5('a' || (i % :n + 1))::uuid::text,
         'agent-' || lpad((i % :n + 1)::text, 7, '0'), 'run-' || i, '{}',
         '{"timeoutSeconds": 600}', '{"phase": "Succeeded"}', 'Succeeded', 1, 1,
         now() - i * interval '1 second', now(), now()
       FROM generate_series(1, :runs) AS i""",
    """INSERT INTO run_steps (run_id, call_id, type, name, status, attempt, step, recorded_at)
       SELECT md5('r' || i)::uuid::text, 'call-' || s, 'tool', 'bench', 'succeeded', 1,
         jsonb_build_object('callId', 'call-' || s, 'type', 'tool', 'name', 'bench',
           'status', 'succeeded', 'startedAt', '2026-12-02T00:00:00Z',
           'endedAt', '2026-12-02T00:00:01Z'), now()
       FROM generate_series(1, :runs) AS i, generate_series(1, 3) AS s""",
    """INSERT INTO idempotency_keys (tenant, principal, key, request_hash, state,
         response_status, response_body, created_at, expires_at)
       SELECT :tenant, 'bench', 'key-' || i, 'hash', 'done', 201, '{}', now(),
         now() + interval '1 day'
       FROM generate_series(1, :runs) AS i""",
]


def agent_name(i: int) -> str:
    """The name of bulk agent `i`."""
    return f"agent-{i:07d}"


async def fill_agents(
    conn: AsyncConnection, tenant: str, n: int, *, unpublished: int = 500
) -> None:
    """`n` agents in `tenant` (after its `template`), 3 transitions and 10 outbox rows each
    (the last `unpublished` of the outbox still OutboxWritten)."""
    params = {"n": n, "tenant": tenant, "unpublished": unpublished}
    for statement in AGENT_ROWS:
        await conn.execute(text(statement), params)


async def fill_runs(conn: AsyncConnection, tenant: str, n_agents: int, runs: int) -> None:
    """`runs` runs spread over the first `n_agents` bulk agents, 3 steps each, and as many
    idempotency keys (principal `bench`, keys `key-<i>`)."""
    params = {"n": n_agents, "tenant": tenant, "runs": runs}
    for statement in RUN_ROWS:
        await conn.execute(text(statement), params)
