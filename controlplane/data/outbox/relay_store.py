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
from functools import cached_property
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    String,
    and_,
    bindparam,
    case,
    func,
    literal_column,
    or_,
    select,
    text,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from controlplane.data.dialect import dialect_insert
from controlplane.data.outbox.wire import decode_envelope, encode_envelope
from controlplane.data.tables import aggregate_sequences, dead_letters, outbox
from controlplane.domain.events.envelope import EventEnvelope, OutboxState, as_utc, utcnow

AggregateKey = tuple[str, str]


@dataclass(frozen=True)
class OutboxRow:
    """One outbox row as the relay needs it: what routes and records it, and `data`, the
    envelope's wire form (controlplane/data/outbox/wire.py), published as it is."""

    id: int
    event_id: str
    event_type: str
    tenant_id: str
    aggregate_type: str
    aggregate_id: str
    agent_id: str | None
    occurred_at: datetime
    attempts: int
    replay_count: int
    next_attempt_at: datetime
    traceparent: str | None
    data: bytes

    @property
    def msg_id(self) -> str:
        """`Nats-Msg-Id`: the event id; a replay adds `.rN` so JetStream does not drop it
        as a duplicate, while the envelope keeps its `event_id`."""
        eid = self.event_id
        return eid if self.replay_count == 0 else f"{eid}.r{self.replay_count}"

    @cached_property
    def envelope(self) -> EventEnvelope:
        """The event, decoded from `data` (only dead letters need it whole)."""
        return decode_envelope(self.data)


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
    """An `outbox` table row (a SQLAlchemy Row with at least `_RELAY_COLUMNS`) as an
    OutboxRow. A row written before migration 0010 has no `encoded_envelope`: it is encoded
    from its columns (its `payload` must then be selected)."""
    data = r.encoded_envelope
    if data is None:
        data = encode_envelope(_envelope(r))
    return OutboxRow(
        r.id,
        r.event_id,
        r.event_type,
        r.tenant_id,
        r.aggregate_type,
        r.aggregate_id,
        r.agent_id,
        as_utc(r.occurred_at),
        r.attempts,
        r.replay_count,
        as_utc(r.next_attempt_at),
        r.traceparent,
        bytes(data),
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
        event_id=row.event_id,
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


# What the relay reads of a row: never the JSONB payload, except of a row written before
# migration 0010 (no encoded_envelope), which outbox_row() then encodes.
_RELAY_COLUMNS = (
    outbox.c.id,
    outbox.c.event_id,
    outbox.c.event_type,
    outbox.c.schema_version,
    outbox.c.tenant_id,
    outbox.c.aggregate_type,
    outbox.c.aggregate_id,
    outbox.c.agent_id,
    outbox.c.trace_id,
    outbox.c.sequence,
    outbox.c.occurred_at,
    outbox.c.attempts,
    outbox.c.replay_count,
    outbox.c.next_attempt_at,
    outbox.c.traceparent,
    outbox.c.encoded_envelope,
    case((outbox.c.encoded_envelope.is_(None), outbox.c.payload)).label("payload"),
)


def _same_aggregate(table: Any, other: Any) -> Any:
    return and_(
        table.c.aggregate_type == other.c.aggregate_type,
        table.c.aggregate_id == other.c.aggregate_id,
    )


def _row_version(table: Any) -> Any:
    """PostgreSQL's `xmin` of `table`'s row (the transaction that wrote this version), as
    text: it changes with every update of the row."""
    return literal_column(f"{table.name}.xmin::text", String)


def _claim_query(now: Any, limit: Any, *, lateral: bool = False) -> Any:
    """The aggregates to lease: up to `limit` with due events, oldest event first, not
    leased by a live relay and not locked by a writer (SKIP LOCKED), as a SELECT ... FOR
    UPDATE of their `aggregate_sequences` rows. `now` and `limit`: values or bindparams.

    Every lease is read by its aggregate's primary key. `lateral` (PostgreSQL): as LATERAL
    subqueries with LIMIT 1, which the planner runs as one index probe per row, never as a
    join: at 100,000 aggregates it chose a hash join over a scan of all of them (0.2 s a
    claim), and under 1,000 events/s an anti-join on "leased now" scanned every leased
    aggregate once per due row (0.1 s). Its lock also requires the lease row's version
    (`xmin`) to be the one the statement's snapshot read: a row another relay leased and
    released since (its events published after that snapshot) fails the recheck of the
    lock (READ COMMITTED's EvalPlanQual) and is skipped, as a locked one is.
    """
    s = aggregate_sequences

    def free(table: Any) -> Any:
        return or_(table.c.lease_until.is_(None), table.c.lease_until <= now)

    due_rows = select(outbox.c.aggregate_type, outbox.c.aggregate_id, outbox.c.id).where(
        outbox.c.state == OutboxState.OUTBOX_WRITTEN, outbox.c.next_attempt_at <= now
    )
    lease = s.alias("lease")
    if lateral:
        probe = (
            select(_row_version(lease).label("version"))
            .where(_same_aggregate(lease, outbox), free(lease))
            .limit(1)
            .lateral("free_lease")
        )
        due_rows = due_rows.add_columns(probe.c.version)
        due_rows = due_rows.select_from(outbox.join(probe, true()))
    else:
        due_rows = due_rows.join(lease, _same_aggregate(lease, outbox)).where(free(lease))
    due = due_rows.order_by(outbox.c.id).limit(limit * 4).subquery()
    first_id = func.min(due.c.id).label("first_id")
    keys = [due.c.aggregate_type, due.c.aggregate_id]
    if lateral:
        keys.append(due.c.version)
    by_aggregate = select(*keys, first_id).group_by(*keys)
    if lateral:
        # In order already, so the LIMIT below stops the locking at `limit` aggregates.
        by_aggregate = by_aggregate.order_by(first_id)
    firsts = by_aggregate.subquery()
    if lateral:
        row = s.alias("claimed")
        locked = (
            select(row.c.aggregate_type, row.c.aggregate_id)
            .where(
                _same_aggregate(row, firsts),
                free(row),
                _row_version(row) == firsts.c.version,
            )
            .limit(1)
            .with_for_update(skip_locked=True)
            .lateral("locked")
        )
        return (
            select(locked.c.aggregate_type, locked.c.aggregate_id)
            .select_from(firsts.join(locked, true()))
            .order_by(firsts.c.first_id)
            .limit(limit)
        )
    return (
        select(s.c.aggregate_type, s.c.aggregate_id)
        .join(firsts, _same_aggregate(firsts, s))
        .where(free(s))
        .order_by(firsts.c.first_id)
        .limit(limit)
        .with_for_update(of=s, skip_locked=True)
    )


def _pending_query(keys: Any, per_aggregate: Any) -> Any:
    """Unpublished rows of the aggregates `keys` (a list of (type, id), or a selectable
    of them), at most `per_aggregate` of each, in sequence order per aggregate."""
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
        select(*_RELAY_COLUMNS, rank)
        .where(
            tuple_(outbox.c.aggregate_type, outbox.c.aggregate_id).in_(keys),
            outbox.c.state == OutboxState.OUTBOX_WRITTEN,
        )
        .subquery()
    )
    return (
        select(ranked)
        .where(ranked.c.rank <= per_aggregate)
        .order_by(ranked.c.aggregate_type, ranked.c.aggregate_id, ranked.c.sequence)
    )


def _due_rows(rows: Sequence[Any], now: datetime) -> list[OutboxRow]:
    """`rows` (of `_pending_query`) in order, stopping in each aggregate at its first event
    still in backoff (order per aggregate is kept)."""
    result: list[OutboxRow] = []
    blocked: set[AggregateKey] = set()
    for r in rows:
        # By position: the hot loop of a cycle (a Row's attributes are looked up by name).
        (id_, event_id, event_type, _, tenant, agg_type, agg_id, agent_id, _, _) = r[:10]
        (occurred_at, attempts, replays, next_attempt_at, traceparent, data) = r[10:16]
        key = (agg_type, agg_id)
        if key in blocked:
            continue
        next_attempt_at = as_utc(next_attempt_at)
        if next_attempt_at > now:
            blocked.add(key)
            continue
        if data is None:
            result.append(outbox_row(r))
            continue
        result.append(
            OutboxRow(
                id_,
                event_id,
                event_type,
                tenant,
                agg_type,
                agg_id,
                agent_id,
                as_utc(occurred_at),
                attempts,
                replays,
                next_attempt_at,
                traceparent,
                data,
            )
        )
    return result


# A batch whose events were all published (PostgreSQL): mark them as `_mark_published` does
# and release the leases, in one statement (a data-modifying CTE always runs to completion).
_FINISH_PUBLISHED = text(
    "WITH batch AS (SELECT * FROM unnest(:ids, :seqs) AS b(id, seq)),"
    " marked AS (UPDATE outbox SET stream_sequence = batch.seq,"
    f" state = CASE WHEN outbox.state = '{OutboxState.ACKNOWLEDGED}'"
    f" THEN '{OutboxState.ACKNOWLEDGED}' ELSE '{OutboxState.PUBLISHED}' END,"
    " published_at = :now, attempts = outbox.attempts + 1, last_error = NULL"
    " FROM batch WHERE outbox.id = batch.id"
    f" AND outbox.state IN ('{OutboxState.OUTBOX_WRITTEN}', '{OutboxState.ACKNOWLEDGED}')"
    " RETURNING outbox.id)"
    " UPDATE aggregate_sequences SET lease_owner = NULL, lease_until = NULL"
    " FROM unnest(:types, :aggregates) AS k(t, i)"
    " WHERE aggregate_sequences.aggregate_type = k.t AND aggregate_sequences.aggregate_id = k.i"
    " AND aggregate_sequences.lease_owner = :owner"
).bindparams(
    bindparam("ids", type_=ARRAY(BigInteger)),
    bindparam("seqs", type_=ARRAY(BigInteger)),
    bindparam("types", type_=ARRAY(String)),
    bindparam("aggregates", type_=ARRAY(String)),
    bindparam("owner", type_=String),
    bindparam("now", type_=DateTime(timezone=True)),
)


def _claim_pending_statement() -> Any:
    """`RelayStore.claim_pending`'s statement on PostgreSQL, built once (building it costs
    about a millisecond of CPU, more than its execution on a small outbox): the lease taken
    by an UPDATE in a CTE over the SKIP LOCKED pick, and the leased aggregates' rows."""
    s = aggregate_sequences
    now = bindparam("now", type_=DateTime(timezone=True))
    pick = _claim_query(now, bindparam("limit", type_=Integer), lateral=True).cte("pick")
    leased = (
        update(s)
        .where(
            s.c.aggregate_type == pick.c.aggregate_type,
            s.c.aggregate_id == pick.c.aggregate_id,
        )
        .values(
            lease_owner=bindparam("owner", type_=String),
            lease_until=bindparam("until", type_=DateTime(timezone=True)),
        )
        .returning(s.c.aggregate_type, s.c.aggregate_id)
        .cte("leased")
    )
    return _pending_query(
        select(leased.c.aggregate_type, leased.c.aggregate_id),
        bindparam("per_aggregate", type_=Integer),
    )


_CLAIM_PENDING = _claim_pending_statement()


class RelayStore:
    """The relay's access to the outbox, each cycle: `claim_pending` (or `claim` then
    `pending`) → publish → `finish`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"

    async def claim(self, owner: str, lease_s: float, limit: int) -> list[AggregateKey]:
        """Lease up to `limit` aggregates that have due events, oldest event first.

        A lease lasts `lease_s` seconds: a relay that dies loses its aggregates when it ends.
        """
        now = utcnow()
        s = aggregate_sequences
        async with self._engine.begin() as conn:
            pick = _claim_query(now, limit, lateral=self._postgres)
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
        async with self._engine.connect() as conn:
            rows = (await conn.execute(_pending_query(list(keys), per_aggregate))).all()
        return _due_rows(rows, now)

    async def claim_pending(
        self, owner: str, lease_s: float, limit: int, per_aggregate: int
    ) -> tuple[list[AggregateKey], list[OutboxRow]]:
        """`claim` and `pending` at once: the leased aggregates and their due rows.

        PostgreSQL: one statement, one round trip, no transaction around it (the lease is
        taken by an UPDATE in a CTE over the SKIP LOCKED pick, the rows read in the same
        statement, whose snapshot shows every row committed before it). Every leased
        aggregate has a row in that snapshot (it was picked for one), so the keys are the
        rows' aggregates. Elsewhere: `claim`, then `pending`.
        """
        if not self._postgres:
            keys = await self.claim(owner, lease_s, limit)
            return keys, await self.pending(keys, per_aggregate)
        now = utcnow()
        params = {
            "now": now,
            "until": now + timedelta(seconds=lease_s),
            "owner": owner,
            "limit": limit,
            "per_aggregate": per_aggregate,
        }
        async with self._engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            rows = (await conn.execute(_CLAIM_PENDING, params)).all()
        keys = list(dict.fromkeys((r.aggregate_type, r.aggregate_id) for r in rows))
        return keys, _due_rows(rows, now)

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
        """Record a batch's outcome and release its leases, in one transaction (on
        PostgreSQL a batch of only published rows is one statement: one round trip)."""
        now = utcnow()
        if self._postgres and not failed and not dead:
            async with self._engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(
                    _FINISH_PUBLISHED,
                    {
                        "ids": [p.row_id for p in published],
                        "seqs": [p.stream_sequence for p in published],
                        "types": [k[0] for k in keys],
                        "aggregates": [k[1] for k in keys],
                        "owner": owner,
                        "now": now,
                    },
                )
            return
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
