"""The outbox's writing side: events written in the caller's transaction (the transactional
outbox), each with its gapless per-aggregate sequence (architecture/data-layer.md)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, literal_column
from sqlalchemy.ext.asyncio import AsyncConnection

from controlplane.data.dialect import dialect_insert
from controlplane.data.outbox.wire import encode_envelope
from controlplane.data.tables import aggregate_sequences, outbox
from controlplane.domain.events.envelope import EventEnvelope, NewEvent, OutboxState
from controlplane.domain.events.registry import SchemaRegistry
from controlplane.observability import tracing

# PostgreSQL: the channel the relay LISTENs on. A transaction that wrote events notifies it,
# and PostgreSQL delivers the notification only at its commit.
OUTBOX_CHANNEL = "agentos_outbox"


# (A literal column, not func.pg_notify(...): its two bound strings made every statement a
# miss of SQLAlchemy's compiled cache.)
_NOTIFY: Any = literal_column(f"pg_notify('{OUTBOX_CHANNEL}', '')")
_UPSERTS: dict[str, Any] = {}  # dialect name → OutboxWriter._upsert's statement


class OutboxWriter:
    """Writes events to the outbox in the caller's transaction (the transactional outbox).

    The payload is checked against the SchemaRegistry first: a bad payload raises before
    anything is written, and the UnitOfWork rolls the whole change back.
    """

    def __init__(self, conn: AsyncConnection, registry: SchemaRegistry) -> None:
        self._conn = conn
        self._registry = registry
        self._postgres = conn.dialect.name == "postgresql"
        self.written = 0
        self.notified = False  # the relay's NOTIFY is queued in this transaction

    def _upsert(self) -> Any:
        """The sequence upsert for this connection's dialect, built once per dialect. Its
        rows go as parameters, not in .values(): a multi-VALUES upsert has no key in
        SQLAlchemy's compiled cache, and was compiled again for every write."""
        name = self._conn.dialect.name
        if name not in _UPSERTS:
            stmt = dialect_insert(self._conn, aggregate_sequences)
            s = aggregate_sequences
            upsert = stmt.on_conflict_do_update(
                index_elements=["aggregate_type", "aggregate_id"],
                set_={"last_sequence": s.c.last_sequence + stmt.excluded.last_sequence},
            ).returning(s.c.aggregate_type, s.c.aggregate_id, s.c.last_sequence)
            _UPSERTS[name] = upsert.returning(_NOTIFY) if name == "postgresql" else upsert
        return _UPSERTS[name]

    async def _reserve_sequences(
        self, counts: dict[tuple[str, str], int]
    ) -> dict[tuple[str, str], int]:
        """Advance each aggregate's sequence by its count; returns each new last sequence.

        The upsert locks the aggregates' rows until commit: writers of one aggregate are
        serialised, so sequences are gapless and commit in order (a rollback undoes both).
        Keys are sorted so two batches lock rows in the same order (no deadlock). On
        PostgreSQL the statement also queues the relay's NOTIFY (`pg_notify` in RETURNING:
        the same notification queued twice in a transaction is delivered once, at commit),
        which saves the commit a round trip.
        """
        stmt = self._upsert()
        params = [
            {"aggregate_type": t, "aggregate_id": i, "last_sequence": n}
            for (t, i), n in sorted(counts.items())
        ]
        rows = (await self._conn.execute(stmt, params)).all()
        self.notified = self._postgres
        return {(r[0], r[1]): int(r[2]) for r in rows}

    async def add(self, event: NewEvent, *, traceparent: str | None = None) -> EventEnvelope:
        """Validate and write `event`; returns it with its per-aggregate sequence.

        Raises:
            UnknownEventType, EventSchemaViolation: from the SchemaRegistry; nothing written.
        """
        return (await self.add_many([event], traceparent=traceparent))[0]

    async def add_many(
        self, events: list[NewEvent], *, traceparent: str | None = None
    ) -> list[EventEnvelope]:
        """Validate and write `events` (in order within each aggregate) in one round of
        statements; returns them with their sequences. Raises as `add`, before writing."""
        for event in events:
            self._registry.validate(event.event_type, event.schema_version, event.payload)
        if not events:
            return []
        traceparent = traceparent or tracing.current_traceparent()  # the relay continues it
        trace_id = tracing.current_trace_id()
        counts: dict[tuple[str, str], int] = {}
        for event in events:
            key = (event.aggregate_type, event.aggregate_id)
            counts[key] = counts.get(key, 0) + 1
        last = await self._reserve_sequences(counts)
        next_sequence = {key: last[key] - n + 1 for key, n in counts.items()}
        envelopes = []
        for event in events:
            key = (event.aggregate_type, event.aggregate_id)
            sequence = next_sequence[key]
            next_sequence[key] = sequence + 1
            envelopes.append(event.written(sequence, trace_id))
        await self._conn.execute(
            insert(outbox),
            [
                {
                    "event_id": e.event_id,
                    "event_type": e.event_type,
                    "schema_version": e.schema_version,
                    "aggregate_type": e.aggregate_type,
                    "aggregate_id": e.aggregate_id,
                    "sequence": e.sequence,
                    "tenant_id": e.tenant_id,
                    "agent_id": e.agent_id,
                    "trace_id": e.trace_id,
                    "traceparent": traceparent,
                    "occurred_at": e.occurred_at,
                    "payload": e.payload,
                    "state": OutboxState.OUTBOX_WRITTEN,
                    "next_attempt_at": e.occurred_at,
                    # Encoded here, once, so the relay publishes it without decoding the payload.
                    "encoded_envelope": encode_envelope(e),
                }
                for e in envelopes
            ],
        )
        self.written += len(envelopes)
        return envelopes
