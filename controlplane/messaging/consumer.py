"""Consumer helper: a durable JetStream pull consumer with explicit ack and inbox dedupe.

For each message the handler runs inside a database transaction that also records
`(consumer, event_id)` in the inbox and marks the outbox row Acknowledged; the message is
acked only after that transaction commits. So a redelivered event (the ack was lost) is
recognised by its `event_id` and acked without running the handler again.

A handler error rolls back and naks with a delay. When JetStream gives up on a message
(max deliveries reached) it emits a MAX_DELIVERIES advisory; the helper listens for it and
dead-letters the event (table and `AGENTOS_DLQ`), from where `agentos outbox dlq requeue`
sends it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from controlplane.data.outbox.inbox import Inbox
from controlplane.domain.events.envelope import EventEnvelope, parse_rfc3339, utcnow
from controlplane.messaging import metrics
from controlplane.messaging.streams import (
    EVENTS_STREAM,
    EVENTS_SUBJECT_PREFIX,
    ensure_streams,
    publish_dead_letter,
)
from controlplane.observability import tracing

log = structlog.get_logger("agentos.consumer")

Handler = Callable[[EventEnvelope, AsyncConnection], Awaitable[None]]


def decode(data: bytes) -> EventEnvelope:
    """Parse an event from its wire form (see `controlplane.messaging.relay.encode`)."""
    raw: dict[str, Any] = json.loads(data)
    raw["occurred_at"] = parse_rfc3339(raw["occurred_at"])
    return EventEnvelope(**raw)


class EventConsumer:
    """Runs `handler` once per event for the durable consumer `name`.

    Args:
        name: durable consumer name (also the inbox's consumer key).
        filter_subject: subjects to consume, default every event.
        max_deliver: deliveries before JetStream gives up and the event is dead-lettered.
        nak_delay_s: redelivery delay after a handler error.
        ack_wait_s: how long JetStream waits for an ack before redelivering.
    """

    def __init__(
        self,
        nc: NATS,
        engine: AsyncEngine,
        name: str,
        handler: Handler,
        *,
        filter_subject: str = f"{EVENTS_SUBJECT_PREFIX}.>",
        max_deliver: int = 5,
        nak_delay_s: float = 0.5,
        ack_wait_s: float = 30.0,
        batch: int = 64,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._engine = engine
        self._inbox = Inbox(engine)
        self.name = name
        self._handler = handler
        self._filter = filter_subject
        self._max_deliver = max_deliver
        self._nak_delay_s = nak_delay_s
        self._ack_wait_s = ack_wait_s
        self._batch = batch

    async def _on_max_deliveries(self, msg: Msg) -> None:
        advisory = json.loads(msg.data)
        stream_seq = int(advisory["stream_seq"])
        stored = await self._js.get_msg(EVENTS_STREAM, stream_seq)
        envelope = decode(stored.data or b"{}")
        row = await self._inbox.row_by_event_id(envelope.event_id)
        reason = f"consumer {self.name} failed {advisory.get('deliveries')} deliveries"
        if row is not None:
            await self._inbox.dead_letter_event(row, reason, f"consumer:{self.name}")
        metrics.DEAD_LETTERS.labels("consumer").inc()
        log.warning("dead-lettered", consumer=self.name, event_id=envelope.event_id)
        await publish_dead_letter(
            self._js,
            envelope,
            reason=reason,
            source=f"consumer:{self.name}",
            msg_id=f"dlq-{self.name}-{envelope.event_id}-{stream_seq}",
            timeout_s=5.0,
        )

    async def _handle(self, msg: Msg) -> None:
        # Parented on the publish span named by the message's traceparent header.
        with tracing.tracer().start_as_current_span(
            f"process {EVENTS_STREAM}",
            context=tracing.extract(msg.headers),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "process",
                "messaging.destination.name": msg.subject,
                "messaging.consumer.group.name": self.name,
            },
        ):
            await self._handle_traced(msg)

    async def _handle_traced(self, msg: Msg) -> None:
        envelope = decode(msg.data)
        trace.get_current_span().set_attribute("messaging.message.id", envelope.event_id)
        try:
            async with self._engine.begin() as conn:
                first_time = await Inbox.record_delivery(conn, self.name, envelope.event_id)
                if first_time:
                    await self._handler(envelope, conn)
        except Exception as exc:
            metrics.CONSUMER_ERRORS.labels(self.name).inc()
            log.warning(
                "handler failed", consumer=self.name, event_id=envelope.event_id, error=str(exc)
            )
            await msg.nak(delay=self._nak_delay_s)
            return
        await msg.ack()
        if first_time:
            metrics.CONSUMER_ACK_LATENCY.labels(self.name).observe(
                (utcnow() - envelope.occurred_at).total_seconds()
            )

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set. Declares the streams first (idempotent), so a consumer
        may start before any relay has."""
        await ensure_streams(self._js)
        advisory = await self._nc.subscribe(
            f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{EVENTS_STREAM}.{self.name}",
            cb=self._on_max_deliveries,
        )
        sub = await self._js.pull_subscribe(
            self._filter,
            durable=self.name,
            stream=EVENTS_STREAM,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                max_deliver=self._max_deliver,
                ack_wait=self._ack_wait_s,
            ),
        )
        try:
            while not stop.is_set():
                try:
                    msgs = await sub.fetch(self._batch, timeout=0.5)
                except (NatsTimeoutError, TimeoutError):
                    continue
                for msg in msgs:
                    await self._handle(msg)
        finally:
            await advisory.unsubscribe()
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
