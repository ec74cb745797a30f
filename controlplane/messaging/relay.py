"""The outbox relay: committed events → NATS JetStream, exactly once by `event_id`.

Each cycle (adr/0003-outbox-relay-design.md):
1. lease up to `batch_size` aggregates with due events (`FOR UPDATE SKIP LOCKED` + lease);
2. read their unpublished events in sequence order;
3. publish them, one chain per aggregate (an aggregate's next event is sent only after the
   previous one is acked, so order holds even when a publish fails), all chains at once;
4. record the outcome and release the leases in one transaction.

A publish that fails is retried with exponential backoff and full jitter; after
`max_attempts` the event is dead-lettered (table and `AGENTOS_DLQ`). The relay wakes on
PostgreSQL `LISTEN agentos_outbox` and polls as a fallback. SIGTERM drains: the current cycle
finishes and its results are recorded before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.data.engine import is_postgres
from controlplane.data.outbox.admin import OutboxAdmin
from controlplane.data.outbox.relay_store import (
    AggregateKey,
    DeadLetter,
    Failed,
    OutboxRow,
    Published,
    RelayStore,
)
from controlplane.data.outbox.writer import OUTBOX_CHANNEL
from controlplane.domain.events.envelope import utcnow
from controlplane.messaging import metrics
from controlplane.messaging.doorbell import Doorbell
from controlplane.messaging.streams import (
    EVENTS_STREAM,
    ensure_streams,
    event_stream,
    event_subject,
    publish_dead_letter,
)
from controlplane.observability import tracing

log = structlog.get_logger("agentos.relay")


@dataclass(frozen=True)
class RelayConfig:
    """Tuning of the relay; times in seconds."""

    batch_size: int = 256
    per_aggregate: int = 32
    lease_s: float = 30.0
    poll_interval_s: float = 1.0
    publish_timeout_s: float = 5.0
    max_attempts: int = 8
    backoff_base_s: float = 0.5
    backoff_max_s: float = 60.0
    status_interval_s: float = 5.0
    cycles_in_flight: int = 2  # claim → publish → finish cycles at once (PostgreSQL)


def backoff_delay_s(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(max, base·2^(attempt-1))].

    (AWS Architecture Blog, "Exponential Backoff And Jitter", 2015.)
    """
    return rng.uniform(0, min(max_s, base_s * (2 ** max(attempt - 1, 0))))


def encode(row: OutboxRow) -> bytes:
    """The event as it travels on NATS: the envelope as compact JSON, encoded by the writer
    (controlplane/data/outbox/wire.py)."""
    return row.data


class Relay:
    """Moves committed outbox rows to JetStream. Several relays may run at once."""

    def __init__(
        self,
        engine: AsyncEngine,
        database_url: str,
        nc: NATS,
        config: RelayConfig | None = None,
        *,
        owner: str | None = None,
    ) -> None:
        self.store = RelayStore(engine)
        self._admin = OutboxAdmin(engine)  # the backlog gauges read its status
        self._database_url = database_url
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream()
        self.config = config or RelayConfig()
        self.owner = owner or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self._bell = Doorbell()
        self._rng = random.Random()
        self._tracer = tracing.tracer()
        self._span_name = f"publish {EVENTS_STREAM}"
        self.stats = {"published": 0, "duplicates": 0, "failed": 0, "dead_lettered": 0}

    async def setup(self) -> None:
        """Declare the streams (idempotent)."""
        await ensure_streams(self._js)

    async def run_once(self) -> int:
        """One claim → publish → record cycle. Returns how many events it handled."""
        return (await self._cycle())[0]

    async def _cycle(self) -> tuple[int, bool]:
        """One cycle: how many events it handled, and whether more may be due now (its
        batch was full, or an aggregate gave it all the rows a cycle takes of one)."""
        if not self._nc.is_connected:
            return 0, False  # an outage is not a failed attempt: wait for the reconnect
        config = self.config
        keys, rows = await self.store.claim_pending(
            self.owner, config.lease_s, config.batch_size, config.per_aggregate
        )
        if not keys:
            return 0, False
        more = len(keys) >= config.batch_size or _an_aggregate_filled(rows, config.per_aggregate)
        published, failed, dead = await self._publish_all(rows)
        await self.store.finish(self.owner, keys, published, failed, dead)
        self.stats["published"] += len(published)
        self.stats["failed"] += len(failed)
        self.stats["dead_lettered"] += len(dead)
        for d in dead:
            await self._publish_dead_letter(d)
        return len(rows), more

    async def _publish_all(
        self, rows: Sequence[OutboxRow]
    ) -> tuple[list[Published], list[Failed], list[DeadLetter]]:
        chains: dict[AggregateKey, list[OutboxRow]] = defaultdict(list)
        for row in rows:
            chains[(row.aggregate_type, row.aggregate_id)].append(row)
        published: list[Published] = []
        failed: list[Failed] = []
        dead: list[DeadLetter] = []

        async def chain(
            events: list[OutboxRow], deadlines: dict[asyncio.Future[Any], float], traced: bool
        ) -> None:
            for row in events:
                outcome = await self._publish_one(row, deadlines, traced)
                if isinstance(outcome, Published):
                    published.append(outcome)
                    continue
                if row.attempts + 1 >= self.config.max_attempts:
                    reason = f"publish failed {row.attempts + 1} times: {outcome}"
                    dead.append(DeadLetter(row, reason))
                else:
                    delay = backoff_delay_s(
                        row.attempts + 1,
                        self.config.backoff_base_s,
                        self.config.backoff_max_s,
                        self._rng,
                    )
                    failed.append(Failed(row.id, outcome, utcnow() + timedelta(seconds=delay)))
                return  # the rest of this aggregate waits: order per aggregate

        # One chain per aggregate, all at once: an aggregate's next event is sent when its
        # previous one is acked; the connection carries every chain's publishes pipelined.
        # One watchdog bounds every wait for an ack (a timer per publish costs more).
        deadlines: dict[asyncio.Future[Any], float] = {}
        watchdog = asyncio.create_task(self._expire(deadlines))
        traced = _tracing_on()
        try:
            await asyncio.gather(*(chain(events, deadlines, traced) for events in chains.values()))
        finally:
            watchdog.cancel()
        metrics.PUBLISH_ATTEMPTS.inc(len(published) + len(failed) + len(dead))
        metrics.PUBLISHED.inc(len(published))
        return published, failed, dead

    async def _expire(self, deadlines: dict[asyncio.Future[Any], float]) -> None:
        """Fail with TimeoutError every ack not in by its deadline (checked ~10 times per
        publish_timeout_s, so an ack may be waited for up to 10% longer)."""
        loop = asyncio.get_running_loop()
        period_s = min(0.1, self.config.publish_timeout_s / 10)
        while True:
            await asyncio.sleep(period_s)
            now = loop.time()
            for future, deadline in list(deadlines.items()):
                if deadline <= now and not future.done():
                    future.set_exception(TimeoutError())

    async def _publish_one(
        self, row: OutboxRow, deadlines: dict[asyncio.Future[Any], float], traced: bool
    ) -> Published | str:
        subject = event_subject(row)
        if not traced:
            # No SDK installed: a span would be the stored context's non-recording span, and
            # the message would carry the stored traceparent; carry it without the span.
            headers = {"traceparent": row.traceparent} if row.traceparent else {}
            return await self._publish_traced(row, subject, headers, deadlines)
        # The publish span continues the trace stored with the row (the request or reconcile
        # that wrote the event); the message carries the publish span's own traceparent.
        with self._tracer.start_as_current_span(
            self._span_name,
            context=tracing.context_from_traceparent(row.traceparent),
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "send",
                "messaging.destination.name": subject,
                "messaging.message.id": row.event_id,
            },
        ) as span:
            outcome = await self._publish_traced(row, subject, tracing.inject({}), deadlines)
            if not isinstance(outcome, Published):
                span.set_status(StatusCode.ERROR, outcome)
            return outcome

    async def _publish_traced(
        self,
        row: OutboxRow,
        subject: str,
        headers: dict[str, str],
        deadlines: dict[asyncio.Future[Any], float],
    ) -> Published | str:
        headers["Nats-Msg-Id"] = row.msg_id
        headers["Agentos-Event-Type"] = row.event_type
        started = time.perf_counter()
        future: asyncio.Future[Any] | None = None
        try:
            future = await self._js.publish_async(
                subject, row.data, headers=headers, stream=event_stream(row)
            )
            deadlines[future] = asyncio.get_running_loop().time() + self.config.publish_timeout_s
            ack = await future
        except TimeoutError:
            metrics.PUBLISH_FAILURES.labels("timeout").inc()
            return f"no ack within {self.config.publish_timeout_s}s"
        except Exception as exc:  # any broker answer that is not an ack is a failed attempt
            metrics.PUBLISH_FAILURES.labels(type(exc).__name__).inc()
            return f"{type(exc).__name__}: {exc}"
        finally:
            if future is not None:
                deadlines.pop(future, None)
        metrics.PUBLISH_DURATION.observe(time.perf_counter() - started)
        if ack.duplicate:
            self.stats["duplicates"] += 1
            metrics.PUBLISH_DUPLICATES.inc()
            log.info("duplicate", event_id=row.event_id, stream_seq=ack.seq)
        else:
            metrics.COMMIT_TO_PUBLISH.observe((utcnow() - row.occurred_at).total_seconds())
        return Published(row.id, ack.seq)

    async def _publish_dead_letter(self, dead: DeadLetter) -> None:
        metrics.DEAD_LETTERS.labels("relay").inc()
        log.warning("dead-lettered", event_id=dead.row.event_id, reason=dead.reason)
        await publish_dead_letter(
            self._js,
            dead.row.envelope,
            reason=dead.reason,
            source="relay",
            msg_id=f"dlq-{dead.row.msg_id}",
            timeout_s=self.config.publish_timeout_s,
        )

    async def refresh_status_metrics(self) -> None:
        """Update the backlog gauges from the database."""
        status = await self._admin.status()
        for state, count in status.counts.items():
            metrics.OUTBOX_EVENTS.labels(state).set(count)
        metrics.OUTBOX_OLDEST_UNPUBLISHED_AGE.set(status.oldest_unpublished_age_s or 0)

    async def _listen(self, stop: asyncio.Event) -> None:
        """Wake the loop on NOTIFY agentos_outbox; reconnect when PostgreSQL goes away."""
        import asyncpg

        dsn = (
            make_url(self._database_url)
            .set(drivername="postgresql")
            .render_as_string(hide_password=False)
        )
        while not stop.is_set():
            try:
                conn = await asyncpg.connect(dsn, timeout=5)
            except (OSError, asyncpg.PostgresError):
                await _wait(stop, self.config.poll_interval_s)
                continue
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _c, lost=lost: lost.set())
            await conn.add_listener(OUTBOX_CHANNEL, lambda *_args: self._bell.ring())
            self._bell.ring(everyone=True)  # anything committed while we were not listening
            await _first(stop.wait(), lost.wait())
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set; the cycle in progress completes first (drain)."""
        await self.setup()
        listener = None
        if is_postgres(self._database_url):
            listener = asyncio.create_task(self._listen(stop))
        log.info("relay started", owner=self.owner)
        # PostgreSQL: cycles overlap, so one cycle's database round trips run while another
        # publishes. Each leases its own aggregates (SKIP LOCKED), as two relays would.
        overlapping = self.config.cycles_in_flight if listener else 1
        # The backlog gauges' query counts the whole outbox: off the cycles' path.
        status = asyncio.create_task(self._status_loop(stop))
        try:
            await asyncio.gather(*(self._cycles(stop) for _ in range(overlapping)))
        finally:
            for task in (status, listener):
                if task:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            log.info("relay stopped", owner=self.owner)

    async def _status_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.refresh_status_metrics()
            except Exception as exc:  # the database went away: the cycles log it
                log.debug("relay status failed", error=f"{type(exc).__name__}: {exc}")
            await _wait(stop, self.config.status_interval_s)

    async def _cycles(self, stop: asyncio.Event) -> None:
        bell = self._bell
        while not stop.is_set():
            seen = bell.answer()
            try:
                handled, more = await self._cycle()
            except Exception as exc:  # the database went away: log, back off, carry on
                log.warning("relay cycle failed", error=f"{type(exc).__name__}: {exc}")
                handled, more = 0, False
                await _wait(stop, self.config.poll_interval_s)
            # Again at once: when more is due; when a ring found no loop idle; and after a
            # cycle that held leases while rings came (their events, committed after the
            # cycle's snapshot, were skipped by the loop that the ring woke).
            if more or bell.unanswered or (handled and bell.rings != seen):
                continue
            waiter = bell.waiter()
            await _first(stop.wait(), waiter, timeout_s=self.config.poll_interval_s)
            waiter.cancel()


def _an_aggregate_filled(rows: Sequence[OutboxRow], per_aggregate: int) -> bool:
    """Whether some aggregate has `per_aggregate` rows in `rows` (so it may have more)."""
    counts: dict[AggregateKey, int] = defaultdict(int)
    for row in rows:
        key = (row.aggregate_type, row.aggregate_id)
        counts[key] += 1
        if counts[key] >= per_aggregate:
            return True
    return False


def _tracing_on() -> bool:
    """Whether spans are recorded: an SDK TracerProvider is installed (configure_tracing)."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


async def _first(*aws: Any, timeout_s: float | None = None) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
