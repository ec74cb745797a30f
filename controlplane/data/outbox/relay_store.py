"""The outbox as the relay sees it: lease aggregates, read their due events, record what
became of them (published, failed, dead-lettered) — architecture/data-layer.md, ADR 0003.

Claiming: the relay leases *aggregates* (rows of `aggregate_sequences`) with
`FOR UPDATE SKIP LOCKED`, so one relay at a time publishes an aggregate's events, in
sequence order, while other relays take other aggregates. A writer still inside its
transaction holds its aggregate's row lock, so that aggregate is skipped until it commits:
nothing is ever skipped *past* — rows are chosen by state, never by a high-water mark.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, and_, bindparam, case, exists, func, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from controlplane.data.dialect import dialect_insert
from controlplane.data.tables import aggregate_sequences, dead_letters, outbox
from controlplane.domain.events.envelope import EventEnvelope, OutboxState, as_utc, utcnow

AggregateKey = tuple[str, str]


@dataclass(frozen=True)
class OutboxRow:
    """One outbox row as the relay needs it."""

    id: int
    envelope: EventEnvelope
    attempts: int
    replay_count: int
    next_attempt_at: datetime
    traceparent: str | None

    @property
    def msg_id(self) -> str:
        """`Nats-Msg-Id`: the event id; a replay adds `.rN` so JetStream does not drop it
        as a duplicate, while the envelope keeps its `event_id`."""
        eid = self.envelope.event_id
        return eid if self.replay_count == 0 else f"{eid}.r{self.replay_count}"


@dataclass(frozen=True)
class Published:
    """A row JetStream acknowledged, at `stream_sequence` of its stream."""

    row_id: int
    stream_sequence: int


@dataclass(frozen=True)
class Failed:
    """A row whose publish failed; tried again at `next_attempt_at`."""

    row_id: int
    error: str
    next_attempt_at: datetime


@dataclass(frozen=True)
class DeadLetter:
    """A row given up on, and why."""

    row: OutboxRow
    reason: str


def _envelope(row: Any) -> EventEnvelope:
    return EventEnvelope(
        event_id=row.event_id,
        event_type=row.event_type,
        schema_version=row.schema_version,
        occurred_at=as_utc(row.occurred_at),
        trace_id=row.trace_id,
        agent_id=row.agent_id,
        tenant_id=row.tenant_id,
        aggregate_type=row.aggregate_type,
        aggregate_id=row.aggregate_id,
        sequence=row.sequence,
        payload=row.payload,
    )


def outbox_row(r: Any) -> OutboxRow:
    """An `outbox` table row (a SQLAlchemy Row) as an OutboxRow."""
    return OutboxRow(
        r.id,
        _envelope(r),
        r.attempts,
        r.replay_count,
        as_utc(r.next_attempt_at),
        r.traceparent,
    )


# SQLite: a CASE with one WHEN per row costs rows x WHENs, so it is applied in chunks.
_CASE_CHUNK = 500


async def _mark_published(
    conn: AsyncConnection, published: Sequence[Published], now: datetime
) -> None:
    """Record each row's stream sequence and mark it Published.

    A consumer may have acknowledged the event between the broker's ack and this update:
    Acknowledged stays, it already implies Published.

    PostgreSQL: one UPDATE joined to two array parameters, whatever the batch size. (A CASE
    with one WHEN per row is quadratic, ~2 s for 6,250 rows, and asyncpg refuses statements
    of more than 32,767 parameters: a batch of over ~10,900 events could never be recorded.)
    """
    writable = outbox.c.state.in_([OutboxState.OUTBOX_WRITTEN, OutboxState.ACKNOWLEDGED])
    values: dict[str, Any] = {
        "state": case(
            (outbox.c.state == OutboxState.ACKNOWLEDGED, OutboxState.ACKNOWLEDGED),
            else_=OutboxState.PUBLISHED,
        ),
        "published_at": now,
        "attempts": outbox.c.attempts + 1,
        "last_error": None,
    }
    if conn.dialect.name == "postgresql":
        ids = [p.row_id for p in published]
        seqs = [p.stream_sequence for p in published]
        batch = select(
            func.unnest(bindparam("ids", ids, type_=ARRAY(BigInteger))).label("id"),
            func.unnest(bindparam("seqs", seqs, type_=ARRAY(BigInteger))).label("seq"),
        ).subquery("batch")
        await conn.execute(
            update(outbox)
            .where(outbox.c.id == batch.c.id, writable)
            .values(stream_sequence=batch.c.seq, **values)
        )
        return
    for start in range(0, len(published), _CASE_CHUNK):
        chunk = published[start : start + _CASE_CHUNK]
        seq = case({p.row_id: p.stream_sequence for p in chunk}, value=outbox.c.id)
        await conn.execute(
            update(outbox)
            .where(outbox.c.id.in_([p.row_id for p in chunk]), writable)
            .values(stream_sequence=seq, **values)
        )


async def write_dead_letter(
    conn: AsyncConnection, row: OutboxRow, reason: str, source: str, now: datetime
) -> None:
    """In `conn`'s transaction: mark `row` DeadLettered and upsert its `dead_letters` row.

    `source` is `relay` (the failed publish counts as an attempt) or `consumer:<name>`.
    A requeued event that dies again reopens its dead letter (`requeued_at` cleared).
    """
    await conn.execute(
        update(outbox)
        .where(outbox.c.id == row.id)
        .values(
            state=OutboxState.DEAD_LETTERED,
            attempts=row.attempts + 1 if source == "relay" else outbox.c.attempts,
            last_error=reason[:2000],
        )
    )
    stmt = dialect_insert(conn, dead_letters).values(
        event_id=row.envelope.event_id,
        source=source,
        reason=reason[:2000],
        attempts=row.attempts + (1 if source == "relay" else 0),
        envelope=row.envelope.to_dict(),
        dead_at=now,
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["event_id"],
            set_={
                "source": source,
                "reason": reason[:2000],
                "dead_at": now,
                "requeued_at": None,
            },
        )
    )


class RelayStore:
    """The relay's access to the outbox: `claim` → `pending` → `finish`, each cycle."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def claim(self, owner: str, lease_s: float, limit: int) -> list[AggregateKey]:
        """Lease up to `limit` aggregates that have due events, oldest event first.

        A lease lasts `lease_s` seconds: a relay that dies loses its aggregates when it ends.
        """
        now = utcnow()
        s = aggregate_sequences
        leased_elsewhere = exists().where(
            s.c.aggregate_type == outbox.c.aggregate_type,
            s.c.aggregate_id == outbox.c.aggregate_id,
            s.c.lease_until > now,
        )
        due = (
            select(outbox.c.aggregate_type, outbox.c.aggregate_id, outbox.c.id)
            .where(
                outbox.c.state == OutboxState.OUTBOX_WRITTEN,
                outbox.c.next_attempt_at <= now,
                ~leased_elsewhere,
            )
            .order_by(outbox.c.id)
            .limit(limit * 4)
            .subquery()
        )
        firsts = (
            select(due.c.aggregate_type, due.c.aggregate_id, func.min(due.c.id).label("first_id"))
            .group_by(due.c.aggregate_type, due.c.aggregate_id)
            .subquery()
        )
        pick = (
            select(s.c.aggregate_type, s.c.aggregate_id)
            .join(
                firsts,
                and_(
                    firsts.c.aggregate_type == s.c.aggregate_type,
                    firsts.c.aggregate_id == s.c.aggregate_id,
                ),
            )
            .where(or_(s.c.lease_until.is_(None), s.c.lease_until <= now))
            .order_by(firsts.c.first_id)
            .limit(limit)
            .with_for_update(of=s, skip_locked=True)
        )
        async with self._engine.begin() as conn:
            keys = [(r.aggregate_type, r.aggregate_id) for r in await conn.execute(pick)]
            if keys:
                await conn.execute(
                    update(s)
                    .where(tuple_(s.c.aggregate_type, s.c.aggregate_id).in_(keys))
                    .values(lease_owner=owner, lease_until=now + timedelta(seconds=lease_s))
                )
        return keys

    async def pending(self, keys: Sequence[AggregateKey], per_aggregate: int) -> list[OutboxRow]:
        """Unpublished events of leased aggregates, in sequence order, stopping in each
        aggregate at the first event still in backoff (order per aggregate is kept)."""
        if not keys:
            return []
        now = utcnow()
        # At most `per_aggregate` rows of each aggregate leave the database: an aggregate with
        # a backlog of 100,000 events must not be read whole on every cycle.
        rank = (
            func.row_number()
            .over(
                partition_by=(outbox.c.aggregate_type, outbox.c.aggregate_id),
                order_by=outbox.c.sequence,
            )
            .label("rank")
        )
        ranked = (
            select(outbox, rank)
            .where(
                tuple_(outbox.c.aggregate_type, outbox.c.aggregate_id).in_(list(keys)),
                outbox.c.state == OutboxState.OUTBOX_WRITTEN,
            )
            .subquery()
        )
        query = (
            select(ranked)
            .where(ranked.c.rank <= per_aggregate)
            .order_by(ranked.c.aggregate_type, ranked.c.aggregate_id, ranked.c.sequence)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        result: list[OutboxRow] = []
        blocked: set[AggregateKey] = set()
        for r in rows:
            key = (r.aggregate_type, r.aggregate_id)
            if key in blocked:
                continue
            if as_utc(r.next_attempt_at) > now:
                blocked.add(key)
                continue
            result.append(outbox_row(r))
        return result

    async def finish(
        self,
        owner: str,
        keys: Sequence[AggregateKey],
        published: Sequence[Published],
        failed: Sequence[Failed],
        dead: Sequence[DeadLetter],
        *,
        dead_letter_source: str = "relay",
    ) -> None:
        """Record a batch's outcome and release its leases, in one transaction."""
        now = utcnow()
        async with self._engine.begin() as conn:
            if published:
                await _mark_published(conn, published, now)
            for f in failed:
                await conn.execute(
                    update(outbox)
                    .where(outbox.c.id == f.row_id)
                    .values(
                        attempts=outbox.c.attempts + 1,
                        last_error=f.error[:2000],
                        next_attempt_at=f.next_attempt_at,
                    )
                )
            for d in dead:
                await write_dead_letter(conn, d.row, d.reason, dead_letter_source, now)
            if keys:
                s = aggregate_sequences
                await conn.execute(
                    update(s)
                    .where(
                        tuple_(s.c.aggregate_type, s.c.aggregate_id).in_(list(keys)),
                        s.c.lease_owner == owner,
                    )
                    .values(lease_owner=None, lease_until=None)
                )
