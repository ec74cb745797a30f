"""The event envelope of adr/0003-outbox-relay-design.md, as a pure value.

An event is created by the domain or the service layer, validated against its JSON Schema by
the SchemaRegistry, and written to the outbox in the same transaction as the change it
describes. Its `event_id` never changes, through relay retries, replays and dead letters.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ENVELOPE_FIELDS = (
    "event_id",
    "event_type",
    "schema_version",
    "occurred_at",
    "trace_id",
    "agent_id",
    "tenant_id",
    "aggregate_type",
    "aggregate_id",
    "sequence",
    "payload",
)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """`moment` as an RFC 3339 UTC timestamp with microseconds and a `Z` suffix."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(value: str) -> datetime:
    """An RFC 3339 timestamp (`Z` or an offset) as a timezone-aware datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def as_utc(moment: datetime) -> datetime:
    """`moment` made timezone-aware; a naive value is taken as UTC (SQLite returns those)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class NewEvent:
    """An event not yet written: the sequence is assigned by the outbox at write time.

    Attributes:
        event_type: dotted name, e.g. `agent.phase_changed`; with `schema_version` it names the
            JSON Schema that `payload` must satisfy.
        aggregate_type / aggregate_id: the aggregate the event belongs to; order is kept per
            aggregate.
        tenant_id: the tenant that owns the aggregate (also the NATS subject token).
        agent_id: the agent concerned, or None for tenant-level events.
        payload: JSON-serialisable mapping.
    """

    event_type: str
    aggregate_type: str
    aggregate_id: str
    tenant_id: str
    payload: dict[str, Any]
    schema_version: int = 1
    agent_id: str | None = None
    trace_id: str | None = None
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    occurred_at: datetime = field(default_factory=utcnow)

    def written(self, sequence: int, trace_id: str | None = None) -> EventEnvelope:
        """This event as written at `sequence` of its aggregate; `trace_id` stands in for
        an absent own one."""
        return EventEnvelope(
            event_id=self.event_id,
            event_type=self.event_type,
            schema_version=self.schema_version,
            occurred_at=self.occurred_at,
            trace_id=self.trace_id or trace_id,
            agent_id=self.agent_id,
            tenant_id=self.tenant_id,
            aggregate_type=self.aggregate_type,
            aggregate_id=self.aggregate_id,
            sequence=sequence,
            payload=self.payload,
        )


@dataclass(frozen=True)
class EventEnvelope:
    """A written event with its per-aggregate `sequence` (1, 2, ... without gaps)."""

    event_id: str
    event_type: str
    schema_version: int
    occurred_at: datetime
    trace_id: str | None
    agent_id: str | None
    tenant_id: str
    aggregate_type: str
    aggregate_id: str
    sequence: int
    payload: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The wire form: a JSON object with `occurred_at` in RFC 3339 UTC."""
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "schema_version": self.schema_version,
            "occurred_at": rfc3339(self.occurred_at),
            "trace_id": self.trace_id,
            "agent_id": self.agent_id,
            "tenant_id": self.tenant_id,
            "aggregate_type": self.aggregate_type,
            "aggregate_id": self.aggregate_id,
            "sequence": self.sequence,
            "payload": self.payload,
        }


class OutboxState:
    """States of an outbox row (adr/0003-outbox-relay-design.md): Persisted → OutboxWritten →
    Published →
    Acknowledged, or DeadLettered after too many failed attempts.

    `Persisted` is the business row itself; an outbox row starts at `OutboxWritten`.
    """

    OUTBOX_WRITTEN = "OutboxWritten"
    PUBLISHED = "Published"
    ACKNOWLEDGED = "Acknowledged"
    DEAD_LETTERED = "DeadLettered"

    ALL = (OUTBOX_WRITTEN, PUBLISHED, ACKNOWLEDGED, DEAD_LETTERED)
