"""Retention: what the control plane no longer needs is deleted, in small batches.

Three kinds of rows grow without end otherwise (architecture/data-layer.md, Retention):

- outbox rows published (or acknowledged) longer than `outbox_s` ago. Unpublished and
  dead-lettered rows are never purged; `aggregate_sequences` is never touched, so an
  aggregate's next event keeps its sequence. The highest id purged is kept in
  `retention_marks`, so that a watch resuming from an older resourceVersion can be told 410;
- the step journal and the checkpoint of runs that ended (a terminal phase) longer than
  `run_steps_s` ago. The run itself stays; a run under way keeps every step;
- idempotency keys past their `expires_at` (AGENTOS_IDEMPOTENCY_RETENTION_S after use).

Each batch is one short transaction that deletes at most `batch_size` rows chosen by a
subquery with `FOR UPDATE SKIP LOCKED` (PostgreSQL): a row another transaction holds is
left for the next pass, so the purge never waits on a writer, and a writer waits at most
for one batch of other rows. The delete re-checks the condition on the row it deletes, so
a row replayed (back to OutboxWritten) between the pick and the delete stays. A retention
of 0 keeps rows for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from prometheus_client import Counter
from sqlalchemy import delete, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.data.dialect import dialect_insert
from controlplane.data.tables import (
    idempotency_keys,
    outbox,
    retention_marks,
    run_checkpoints,
    run_steps,
    runs,
)
from controlplane.domain.events.envelope import OutboxState, utcnow
from controlplane.domain.runs.lifecycle import TERMINAL

log = structlog.get_logger("agentos.retention")

PURGED = Counter(
    "agentos_retention_purged_total", "Rows deleted by retention, by table.", ["table"]
)

_PUBLISHED = (OutboxState.PUBLISHED, OutboxState.ACKNOWLEDGED)
_ENDED = sorted(str(p) for p in TERMINAL)


@dataclass(frozen=True)
class RetentionPolicy:
    """How long rows are kept, in seconds (0: for ever), and the rows per batch."""

    outbox_s: float = 7 * 24 * 3600.0
    run_steps_s: float = 30 * 24 * 3600.0
    idempotency: bool = True
    batch_size: int = 500


class Retention:
    """Purges by `policy`; `purge()` once, or `run()` every `interval_s` until stopped."""

    def __init__(
        self,
        engine: AsyncEngine,
        policy: RetentionPolicy,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._engine = engine
        self.policy = policy
        self._clock = clock

    async def purge(self) -> dict[str, int]:
        """Delete, batch after batch, every row past its retention; returns rows deleted by
        table (`outbox`, `run_steps`, `run_checkpoints`, `idempotency_keys`)."""
        now = self._clock()
        p = self.policy
        done: dict[str, int] = {}
        if p.outbox_s > 0:
            done["outbox"] = await self._drain(
                "outbox", lambda: self._outbox_batch(now - timedelta(seconds=p.outbox_s))
            )
        if p.run_steps_s > 0:
            ended_before = now - timedelta(seconds=p.run_steps_s)
            done["run_steps"] = await self._drain(
                "run_steps", lambda: self._steps_batch(ended_before)
            )
            done["run_checkpoints"] = await self._drain(
                "run_checkpoints", lambda: self._checkpoints_batch(ended_before)
            )
        if p.idempotency:
            done["idempotency_keys"] = await self._drain(
                "idempotency_keys", lambda: self._idempotency_batch(now)
            )
        return done

    async def run(self, stop: asyncio.Event, interval_s: float) -> None:
        """Purge every `interval_s` seconds until `stop` is set; a failed pass (the database
        away) is logged and tried again at the next interval."""
        while not stop.is_set():
            try:
                purged = await self.purge()
                if any(purged.values()):
                    log.info("retention purged", **purged)
            except Exception as exc:
                log.warning("retention pass failed", error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)

    async def _drain(self, table: str, batch: Callable[[], Any]) -> int:
        total = 0
        while True:
            n: int = await batch()
            total += n
            PURGED.labels(table).inc(n)
            if n < self.policy.batch_size:
                return total
            await asyncio.sleep(0)  # let the process's other work run between batches

    async def _outbox_batch(self, published_before: datetime) -> int:
        # published_at >= occurred_at, so the occurred_at bound (indexed) narrows the scan.
        old = (
            outbox.c.state.in_(_PUBLISHED),
            outbox.c.occurred_at < published_before,
            outbox.c.published_at < published_before,
        )
        pick = (
            select(outbox.c.id)
            .where(*old)
            .order_by(outbox.c.id)
            .limit(self.policy.batch_size)
            .with_for_update(skip_locked=True)
        )
        async with self._engine.begin() as conn:
            ids = list((await conn.execute(pick)).scalars())
            if not ids:
                return 0
            result = await conn.execute(delete(outbox).where(outbox.c.id.in_(ids), *old))
            stmt = dialect_insert(conn, retention_marks).values(
                table_name="outbox", purged_through_id=max(ids), purged_at=utcnow()
            )
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["table_name"],
                    set_={
                        "purged_through_id": func.max(
                            retention_marks.c.purged_through_id, stmt.excluded.purged_through_id
                        )
                        if conn.dialect.name == "sqlite"
                        else func.greatest(
                            retention_marks.c.purged_through_id, stmt.excluded.purged_through_id
                        ),
                        "purged_at": stmt.excluded.purged_at,
                    },
                )
            )
        return int(result.rowcount)

    def _ended_runs(self, ended_before: datetime) -> Any:
        return select(runs.c.id).where(runs.c.phase.in_(_ENDED), runs.c.updated_at < ended_before)

    async def _steps_batch(self, ended_before: datetime) -> int:
        ended = self._ended_runs(ended_before)
        pick = (
            select(run_steps.c.id)
            .where(run_steps.c.run_id.in_(ended))
            .order_by(run_steps.c.id)
            .limit(self.policy.batch_size)
            .with_for_update(skip_locked=True)
        )
        async with self._engine.begin() as conn:
            ids = list((await conn.execute(pick)).scalars())
            if not ids:
                return 0
            result = await conn.execute(
                delete(run_steps).where(run_steps.c.id.in_(ids), run_steps.c.run_id.in_(ended))
            )
        return int(result.rowcount)

    async def _checkpoints_batch(self, ended_before: datetime) -> int:
        ended = self._ended_runs(ended_before)
        c = run_checkpoints
        pick = (
            select(c.c.run_id)
            .where(c.c.run_id.in_(ended))
            .limit(self.policy.batch_size)
            .with_for_update(skip_locked=True)
        )
        async with self._engine.begin() as conn:
            ids = list((await conn.execute(pick)).scalars())
            if not ids:
                return 0
            result = await conn.execute(delete(c).where(c.c.run_id.in_(ids), c.c.run_id.in_(ended)))
        return int(result.rowcount)

    async def _idempotency_batch(self, now: datetime) -> int:
        k = idempotency_keys
        pick = (
            select(k.c.tenant, k.c.principal, k.c.key)
            .where(k.c.expires_at <= now)
            .limit(self.policy.batch_size)
            .with_for_update(skip_locked=True)
        )
        async with self._engine.begin() as conn:
            keys = [tuple(r) for r in await conn.execute(pick)]
            if not keys:
                return 0
            result = await conn.execute(
                delete(k).where(
                    tuple_(k.c.tenant, k.c.principal, k.c.key).in_(keys), k.c.expires_at <= now
                )
            )
        return int(result.rowcount)


async def purged_through(engine: AsyncEngine, table: str = "outbox") -> int:
    """The highest id retention deleted from `table` (0: none yet)."""
    async with engine.connect() as conn:
        mark = (
            await conn.execute(
                select(retention_marks.c.purged_through_id).where(
                    retention_marks.c.table_name == table
                )
            )
        ).scalar()
    return int(mark or 0)
